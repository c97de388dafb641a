#define _GNU_SOURCE
#include "args.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A model of how runc 1.1 reads its command line: urfave/cli 1.22 on Go's flag package.
 *
 *  - Go's flag: -name, --name, -name=value, --name=value; a value flag without '=' takes the
 *    next argument whatever it looks like; a bool flag takes only "=value" (ParseBool); "--"
 *    ends the flags and is consumed; "-" or a word ends them and stays; "---x", "-=x" are
 *    errors; an unknown flag is an error.
 *  - urfave: each "long, short" flag is two Go flags; setting both is an error. The app adds
 *    --help/-h and --version/-v, every command adds --help/-h. A command's arguments are
 *    first reordered (reorderArgs): its own flags, each with the next argument when it has no
 *    '=', move before the rest; at the first "--" that is not a flag's value, everything not
 *    yet moved (unknown flags included) goes after a "--", so it all becomes positionals.
 *
 * The launcher passes a line through only when this model says runc starts nothing (another
 * command, help, version, a usage error before any command); every create or run is either
 * read exactly (and fenced) or refused. A line outside the model is refused, never guessed.
 */

enum ftype { F_BOOL, F_STR, F_UINT };

struct fdef {
	const char *name;
	const char *alt; /* the second urfave name, or NULL */
	enum ftype type;
};

struct fval {
	int set[2];	    /* which of name/alt Go saw */
	const char *val[2]; /* its last value (str, uint) */
	int on[2];	    /* its last value (bool) */
};

#define MAX_DEFS 12

static char whybuf[1024], errbuf[512];

__attribute__((format(printf, 3, 4))) static const char *put(char *buf, size_t n, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	vsnprintf(buf, n, f, ap);
	va_end(ap);
	return buf;
}
/* why: the refusal (it may quote a usage error); usage: the usage error itself. */
#define why(...)   put(whybuf, sizeof(whybuf), __VA_ARGS__)
#define usage(...) put(errbuf, sizeof(errbuf), __VA_ARGS__)

static const struct fdef global_defs[] = {
	{ "debug", NULL, F_BOOL },   { "log", NULL, F_STR },  { "log-format", NULL, F_STR },
	{ "root", NULL, F_STR },     { "criu", NULL, F_STR }, { "systemd-cgroup", NULL, F_BOOL },
	{ "rootless", NULL, F_STR }, { "help", "h", F_BOOL }, { "version", "v", F_BOOL },
	{ NULL, NULL, 0 },
};
enum { G_DEBUG, G_LOG, G_LOG_FORMAT, G_ROOT, G_CRIU, G_SYSTEMD, G_ROOTLESS, G_HELP, G_VERSION };

/* create's flags first: run has the same ones plus three. */
static const struct fdef run_defs[] = {
	{ "bundle", "b", F_STR },
	{ "console-socket", NULL, F_STR },
	{ "pid-file", NULL, F_STR },
	{ "no-pivot", NULL, F_BOOL },
	{ "no-new-keyring", NULL, F_BOOL },
	{ "preserve-fds", NULL, F_UINT },
	{ "help", "h", F_BOOL },
	{ "detach", "d", F_BOOL },
	{ "keep", NULL, F_BOOL },
	{ "no-subreaper", NULL, F_BOOL },
	{ NULL, NULL, 0 },
};
#define CREATE_NDEFS 7
enum {
	C_BUNDLE,
	C_CONSOLE,
	C_PID_FILE,
	C_NO_PIVOT,
	C_NO_KEYRING,
	C_PRESERVE,
	C_HELP,
	R_DETACH,
	R_KEEP,
	R_NO_SUBREAPER
};

/* Commands of runc 1.1 that start no container (help, h: urfave's help command). */
static const char *const harmless[] = {
	"checkpoint", "delete", "events", "exec",  "init",   "kill",	 "list", "pause", "ps",
	"resume",     "spec",	"start",  "state", "update", "features", "help", "h",	  NULL,
};

/* strconv.ParseBool */
static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True", NULL };
	static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False", NULL };
	for (int i = 0; yes[i]; i++)
		if (!strcmp(s, yes[i]))
			return *out = 1, 0;
	for (int i = 0; no[i]; i++)
		if (!strcmp(s, no[i]))
			return *out = 0, 0;
	return -1;
}

/*
 * The decimal subset of strconv.ParseUint(s, 0, 64). Go also takes 0x.., 0o.., 0b.., a
 * leading-0 octal and '_' separators; those spellings are refused here rather than modelled.
 */
static int plain_uint(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

static int lookup(const struct fdef *defs, int ndefs, const char *name, size_t len, int *which)
{
	for (int d = 0; d < ndefs; d++) {
		const char *names[2] = { defs[d].name, defs[d].alt };
		for (int w = 0; w < 2; w++)
			if (names[w] && strlen(names[w]) == len && !memcmp(names[w], name, len))
				return *which = w, d;
	}
	return -1;
}

/*
 * Go's FlagSet.Parse over args[0..n). On success *rest is the index of the first positional
 * (after a consumed "--"). On a usage error returns -1 with the reason in *err.
 */
static int go_parse(const struct fdef *defs, int ndefs, char **args, int n, struct fval *v, int *rest, const char **err)
{
	memset(v, 0, sizeof(*v) * (size_t)ndefs);
	int i = 0;
	while (i < n) {
		const char *s = args[i];
		if (strlen(s) < 2 || s[0] != '-')
			break;
		int minuses = 1;
		if (s[1] == '-') {
			minuses = 2;
			if (s[2] == '\0') {
				i++;
				break;
			}
		}
		const char *name = s + minuses;
		if (name[0] == '-' || name[0] == '=')
			return *err = usage("bad flag syntax: %s", s), -1;
		i++;
		const char *eq = strchr(name + 1, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const char *value = eq ? eq + 1 : NULL;
		int w;
		int d = lookup(defs, ndefs, name, len, &w);
		if (d < 0)
			return *err = usage("flag provided but not defined: -%.*s", (int)len, name), -1;
		if (defs[d].type == F_BOOL) {
			int on = 1;
			if (value && parse_bool(value, &on))
				return *err = usage("invalid boolean value \"%s\" for -%.*s", value, (int)len, name),
				       -1;
			v[d].on[w] = on;
		} else {
			if (!value && i < n)
				value = args[i++];
			if (!value)
				return *err = usage("flag needs an argument: -%.*s", (int)len, name), -1;
			if (defs[d].type == F_UINT && !plain_uint(value))
				return *err = usage("\"%s\" for -%.*s is not a plain decimal count", value, (int)len,
						    name),
				       -1;
			v[d].val[w] = value;
		}
		v[d].set[w] = 1;
	}
	*rest = i;
	/* urfave's normalizeFlags: one value per flag, under either name, not both. */
	for (int d = 0; d < ndefs; d++) {
		if (v[d].set[0] && v[d].set[1])
			return *err = usage("Cannot use two forms of the same flag: -%s and -%s", defs[d].name,
					    defs[d].alt),
			       -1;
		if (v[d].set[1]) {
			v[d].set[0] = 1;
			v[d].val[0] = v[d].val[1];
			v[d].on[0] = v[d].on[1];
		}
	}
	return 0;
}

/* urfave's argIsFlag, literally: strip "--" then "-" (each once), cut at '=', compare names. */
static int arg_is_flag(const struct fdef *defs, int ndefs, const char *arg)
{
	if (!strcmp(arg, "-") || !strcmp(arg, "--") || arg[0] != '-')
		return 0;
	if (arg[1] == '-')
		arg += 2; /* strings.Replace(arg, "-", "", 2) on a "--" prefix */
	if (arg[0] == '-')
		arg += 1;
	size_t len = strcspn(arg, "=");
	int w;
	return lookup(defs, ndefs, arg, len, &w) >= 0;
}

/* urfave's reorderArgs into out (n + 1 slots). */
static int reorder(const struct fdef *defs, int ndefs, char **args, int n, char **out)
{
	char **rest = malloc(sizeof(char *) * (size_t)(n + 1));
	if (!rest)
		return -1;
	int no = 0, nr = 0, may_value = 0;
	for (int i = 0; i < n; i++) {
		char *arg = args[i];
		if (may_value && !arg_is_flag(defs, ndefs, arg)) {
			may_value = 0;
			out[no++] = arg;
		} else if (!strcmp(arg, "--")) {
			out[no++] = arg; /* the caller's own "--": an id taken from it is one of its arguments */
			for (int j = 0; j < nr; j++)
				out[no++] = rest[j];
			for (int j = i + 1; j < n; j++)
				out[no++] = args[j];
			nr = 0;
			break;
		} else if (arg_is_flag(defs, ndefs, arg)) {
			out[no++] = arg;
			may_value = strchr(arg, '=') == NULL;
		} else {
			rest[nr++] = arg;
		}
	}
	for (int j = 0; j < nr; j++)
		out[no++] = rest[j];
	free(rest);
	return no;
}

static int one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return 1;
	return 0;
}

static int is_starting(const char *s)
{
	return !strcmp(s, "create") || !strcmp(s, "run") || !strcmp(s, "restore");
}

static enum args_kind parse_command(struct runc_args *a, int is_run)
{
	const char *cmd = a->argv[a->sub];
	int ndefs = is_run ? (int)(sizeof(run_defs) / sizeof(run_defs[0])) - 1 : CREATE_NDEFS;
	int n = a->argc - a->sub - 1;
	char **order = malloc(sizeof(char *) * (size_t)(n + 2));
	struct fval v[MAX_DEFS];
	const char *err = NULL;
	int rest;

	if (!order)
		return a->why = "out of memory reading the command line", ARGS_REFUSE;
	int no = reorder(run_defs, ndefs, a->argv + a->sub + 1, n, order);
	if (no < 0 || go_parse(run_defs, ndefs, order, no, v, &rest, &err)) {
		free(order);
		a->why = why("runc %s would not accept this command line (%s)", cmd, err ? err : "out of memory");
		return ARGS_REFUSE;
	}
	if (v[C_HELP].set[0] && v[C_HELP].on[0]) {
		free(order);
		return ARGS_PASSTHROUGH; /* runc prints the command's help and starts nothing */
	}
	if (no - rest != 1) {
		free(order);
		a->why = why("runc %s takes exactly one container id, this line has %d", cmd, no - rest);
		return ARGS_REFUSE;
	}
	a->id = order[rest];
	free(order);
	if (!a->id[0])
		return a->why = why("runc %s was given an empty container id", cmd), ARGS_REFUSE;
	a->bundle = v[C_BUNDLE].val[0];
	a->console_socket = v[C_CONSOLE].val[0];
	a->pid_file = v[C_PID_FILE].val[0];
	a->preserve_fds = v[C_PRESERVE].val[0];
	a->no_pivot = v[C_NO_PIVOT].on[0];
	a->no_new_keyring = v[C_NO_KEYRING].on[0];
	if (is_run) {
		a->detach = v[R_DETACH].on[0];
		a->keep = v[R_KEEP].on[0];
		a->no_subreaper = v[R_NO_SUBREAPER].on[0];
	}
	return is_run ? ARGS_RUN : ARGS_CREATE;
}

enum args_kind args_parse(int argc, char **argv, struct runc_args *a)
{
	struct fval v[MAX_DEFS];
	const char *err = NULL;
	int rest;
	int ndefs = (int)(sizeof(global_defs) / sizeof(global_defs[0])) - 1;

	memset(a, 0, sizeof(*a));
	a->argc = argc;
	a->argv = argv;
	a->sub = -1;

	int bad = go_parse(global_defs, ndefs, argv + 1, argc - 1, v, &rest, &err);
	/* Read so far even on a usage error, so that a refusal still reaches runc's log. */
	a->root = v[G_ROOT].val[0];
	a->log = v[G_LOG].val[0];
	a->log_json = v[G_LOG_FORMAT].val[0] && !strcmp(v[G_LOG_FORMAT].val[0], "json");
	if (bad) {
		/* runc stops with "Incorrect Usage"; the word check is a second lock on that door. */
		for (int i = 1; i < argc; i++)
			if (is_starting(argv[i])) {
				a->why = why("runc would not accept this command line (%s), and it names %s; "
					     "refusing rather than guessing",
					     err, argv[i]);
				return ARGS_REFUSE;
			}
		return ARGS_PASSTHROUGH;
	}
	if ((v[G_HELP].set[0] && v[G_HELP].on[0]) || (v[G_VERSION].set[0] && v[G_VERSION].on[0]))
		return ARGS_PASSTHROUGH; /* help or version, and nothing else */
	if (rest + 1 >= argc)
		return ARGS_PASSTHROUGH; /* no command: runc prints its help */
	a->sub = rest + 1;
	const char *cmd = argv[a->sub];
	if (!strcmp(cmd, "create"))
		return parse_command(a, 0);
	if (!strcmp(cmd, "run"))
		return parse_command(a, 1);
	if (!strcmp(cmd, "restore")) {
		a->why = "runc restore is not supported: a restored container would run without its "
			 "cgfence fences (checkpoint/restore of fenced containers is not implemented)";
		return ARGS_REFUSE;
	}
	if (one_of(cmd, harmless))
		return ARGS_PASSTHROUGH;
	a->why = why("unknown runc command \"%s\"; cgfence-runc passes on only commands it knows "
		     "start no container",
		     cmd);
	return ARGS_REFUSE;
}
