#define _GNU_SOURCE
#include "args.h"

#include <string.h>

/*
 * runc parses flags with urfave/cli v1 on top of Go's flag package, so the
 * accepted spellings are: -name, --name, -name=value, --name=value, and a
 * value flag without '=' takes the next argument whatever it looks like.
 * We mirror that exactly; a different reading than runc's would let the
 * container id or bundle we fence differ from the one runc creates.
 */

struct flag {
	const char *name;   /* without dashes */
	size_t len;
	const char *value;  /* after '=', NULL if none */
};

/* Returns 0 if arg is not a flag (a positional, "-", or "--"). */
static int split_flag(const char *arg, struct flag *f)
{
	if (arg[0] != '-' || arg[1] == '\0')
		return 0;
	const char *n = arg + 1;
	if (*n == '-') {
		n++;
		if (*n == '\0')
			return 0;
	}
	const char *eq = strchr(n, '=');
	f->name = n;
	f->len = eq ? (size_t)(eq - n) : strlen(n);
	f->value = eq ? eq + 1 : NULL;
	return 1;
}

static int is(const struct flag *f, const char *name)
{
	return strlen(name) == f->len && memcmp(f->name, name, f->len) == 0;
}

static int is_any(const struct flag *f, const char *const *names)
{
	for (; *names; names++)
		if (is(f, *names))
			return 1;
	return 0;
}

static const char *const global_value[] = { "root", "log", "log-format", "criu", "rootless", NULL };
static const char *const global_bool[] = { "debug", "systemd-cgroup", NULL };
static const char *const help_flags[] = { "help", "h", "version", "v", NULL };
/* pidfd-socket exists from runc 1.2 on; knowing it costs nothing. */
static const char *const create_value[] = { "bundle", "b", "pid-file", "console-socket",
					    "preserve-fds", "pidfd-socket", NULL };
static const char *const create_bool[] = { "no-pivot", "no-new-keyring", NULL };

/*
 * An unknown global flag makes every later position ambiguous. runc 1.1
 * rejects unknown flags anyway, so passing through is harmless unless the
 * line could be a create, which must never go unfenced: refuse that case.
 */
static enum args_kind unknown_global(struct runc_args *a, int i)
{
	for (int j = i + 1; j < a->argc; j++) {
		if (strcmp(a->argv[j], "create") == 0) {
			a->bad_flag = a->argv[i];
			return ARGS_UNSUPPORTED;
		}
	}
	return ARGS_PASSTHROUGH;
}

static enum args_kind parse_create(struct runc_args *a)
{
	int positionals = 0;
	int only_positionals = 0;

	for (int i = a->sub + 1; i < a->argc; i++) {
		const char *arg = a->argv[i];
		struct flag f;

		if (only_positionals || !split_flag(arg, &f)) {
			if (!only_positionals && strcmp(arg, "--") == 0) {
				only_positionals = 1;
				continue;
			}
			a->id = arg;
			positionals++;
			continue;
		}
		if (is_any(&f, help_flags))
			return ARGS_PASSTHROUGH;
		if (is_any(&f, create_bool))
			continue;
		if (is_any(&f, create_value)) {
			const char *v = f.value;
			if (!v) {
				if (i + 1 >= a->argc)
					return ARGS_PASSTHROUGH; /* runc will say what is missing */
				v = a->argv[++i];
			}
			if (is(&f, "bundle") || is(&f, "b"))
				a->bundle = v;
			else if (is(&f, "pid-file"))
				a->pid_file = v;
			continue;
		}
		/* name=value cannot swallow the next argument, so the id stays certain. */
		if (f.value)
			continue;
		a->bad_flag = arg;
		return ARGS_UNSUPPORTED;
	}
	/* runc itself rejects anything but exactly one id; let it say so. */
	if (positionals != 1 || a->id[0] == '\0')
		return ARGS_PASSTHROUGH;
	return ARGS_CREATE;
}

enum args_kind args_parse(int argc, char **argv, struct runc_args *a)
{
	memset(a, 0, sizeof(*a));
	a->argc = argc;
	a->argv = argv;
	a->sub = -1;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		struct flag f;

		if (!split_flag(arg, &f)) {
			if (strcmp(arg, "--") == 0) {
				if (i + 1 >= argc)
					return ARGS_PASSTHROUGH;
				i++;
			}
			a->sub = i;
			break;
		}
		if (is_any(&f, help_flags))
			return ARGS_PASSTHROUGH;
		if (is_any(&f, global_bool))
			continue;
		if (!is_any(&f, global_value)) {
			if (f.value)
				continue;
			return unknown_global(a, i);
		}
		const char *v = f.value;
		if (!v) {
			if (i + 1 >= argc)
				return ARGS_PASSTHROUGH;
			v = argv[++i];
		}
		if (is(&f, "root"))
			a->root = v;
		else if (is(&f, "log"))
			a->log = v;
		else if (is(&f, "log-format"))
			a->log_json = strcmp(v, "json") == 0;
	}
	if (a->sub < 0 || strcmp(argv[a->sub], "create") != 0)
		return ARGS_PASSTHROUGH;
	return parse_create(a);
}
