/*
 * cgfence-runc: the runtime binary containerd's runc.v2 shim runs in place
 * of runc. A create is fenced: the daemon prepares the bundle, the real runc
 * creates the container (its init blocked before the user's entrypoint), the
 * daemon attaches the fences to the container's cgroup, and only then do we
 * return, so nothing in the container ever runs unfenced. A run is the same
 * create, then runc start, then (in the foreground) what runc run does: wait
 * for the init, forward signals, delete. restore is refused. Commands known
 * to start no container are an execv of runc with the same arguments; every
 * other line is refused (see args.c). Details: docs/launcher.md.
 */
#define _GNU_SOURCE
#include "args.h"
#include "bundle-config.h"
#include "config.h"
#include "daemon-client.h"
#include "json.h"
#include "node-hint.h"
#include "runc-exec.h"
#include "runc-log.h"
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static struct runc_args args;
static struct config cfg;
static char msg[16384];

__attribute__((format(printf, 1, 2))) static const char *fmt(const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	vsnprintf(msg, sizeof(msg), f, ap);
	va_end(ap);
	return msg;
}

static void report(const char *level, const char *m)
{
	runclog_report(args.log, args.log_json, level, m);
}

static int refuse(const char *m)
{
	report("error", m);
	return 1;
}

static const char *runc_error(const char *runc_configured, int e)
{
	if (e == ELOOP)
		return fmt("cgfence: the real runc resolves to cgfence-runc itself; "
			   "set CGFENCE_REAL_RUNC or runc= in %s",
			   cfg.file);
	if (runc_configured)
		return fmt("cgfence: cannot run the real runc %s (%s)", runc_configured, strerror(e));
	return fmt("cgfence: no runc found in PATH; set CGFENCE_REAL_RUNC or runc= in %s", cfg.file);
}

/* The shim runs us with the bundle as cwd, but the daemon needs a path that means the same from anywhere. */
static const char *absolute(const char *p, char *buf, size_t n)
{
	if (p && p[0] == '/')
		return p;
	if (!getcwd(buf, n))
		return NULL;
	if (p && *p && !(p[0] == '.' && p[1] == '\0')) {
		size_t l = strlen(buf);
		const char *rel = (p[0] == '.' && p[1] == '/') ? p + 2 : p;
		if (l + 1 + strlen(rel) + 1 > n) {
			errno = ENAMETOOLONG;
			return NULL;
		}
		if (l > 1)
			buf[l++] = '/';
		strcpy(buf + l, rel);
	}
	return buf;
}

static void request(struct sbuf *b, const char *op, const char *bundle, const char *root, long pid)
{
	sb_puts(b, "{\"op\":");
	sb_json_str(b, op);
	sb_puts(b, ",\"id\":");
	sb_json_str(b, args.id);
	sb_puts(b, ",\"bundle\":");
	sb_json_str(b, bundle);
	sb_puts(b, ",\"runcRoot\":");
	sb_json_str(b, root);
	if (pid > 0) {
		sb_puts(b, ",\"pid\":");
		sb_putl(b, pid);
	}
	/* This launcher takes an attach outcome the daemon sends unasked (await_attach). */
	if (strcmp(op, "prepare") == 0)
		sb_puts(b, ",\"push\":true");
	sb_puts(b, "}\n");
}

/*
 * One request on *conn, connecting first when it is not open. Prepare and attach share one
 * connection (the daemon answers requests on a connection in order): one connect and accept
 * per create, not two. A kept connection that the daemon closed in between (it restarted
 * while runc created the container) is given one fresh connection, as a second connect
 * always was.
 */
static enum dc_status call(int *conn, const char *op, const char *bundle, const char *root, long pid,
			   struct dc_result *r)
{
	char storage[4096];
	struct sbuf b;

	sb_init(&b, storage, sizeof(storage));
	request(&b, op, bundle, root, pid);
	if (b.oom) {
		r->status = DC_BROKEN;
		r->msg = "out of memory building the request";
		return DC_BROKEN;
	}
	int kept = *conn >= 0;
	enum dc_status st = kept ? DC_OK : dc_connect(cfg.socket, conn, r);
	if (st == DC_OK)
		st = dc_request(conn, b.p, b.len, r);
	if (st == DC_BROKEN && kept && r->gone) {
		st = dc_connect(cfg.socket, conn, r);
		if (st == DC_OK)
			st = dc_request(conn, b.p, b.len, r);
	}
	sb_free(&b);
	return st;
}

static long read_pid(const char *path)
{
	char buf[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n;
	do
		n = read(fd, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	int e = errno;
	close(fd);
	if (n < 0) {
		errno = e;
		return -1;
	}
	buf[n] = '\0';
	char *end;
	errno = 0;
	long pid = strtol(buf, &end, 10);
	while (*end == '\n' || *end == ' ')
		end++;
	if (errno || end == buf || *end || pid <= 0 || pid > INT_MAX) {
		errno = EINVAL;
		return -1;
	}
	return pid;
}

/*
 * The container exists but is not fenced: remove it before reporting, so
 * the shim's own cleanup finds nothing and nothing of it can ever start.
 * Returns a note for the error message when the removal itself failed.
 */
static const char *remove_container(const char *runc)
{
	static char note[256];
	int nglobal = args.sub - 1;
	char **argv = malloc(sizeof(char *) * (size_t)(nglobal + 6));
	if (!argv)
		return "; removing the half-created container failed (out of memory)";

	int n = 0;
	argv[n++] = (char *)runc;
	for (int i = 1; i < args.sub; i++)
		argv[n++] = args.argv[i];
	argv[n++] = "delete";
	argv[n++] = "--force";
	/* runc ids may start with '-'; "--" keeps such an id from reading as a flag. */
	if (args.id[0] == '-')
		argv[n++] = "--";
	argv[n++] = (char *)args.id;
	argv[n] = NULL;

	int st = runc_run(runc, argv, 1);
	int e = errno;
	free(argv);
	if (st < 0)
		snprintf(note, sizeof(note), "; removing the half-created container failed (%s)", strerror(e));
	else if (st != 0)
		snprintf(note, sizeof(note), "; removing the half-created container failed (runc delete exit %d)",
			 exit_code(st));
	else
		note[0] = '\0';
	return note;
}

/* The settings every create needs; 0, or the exit code of a refusal already reported. */
static int load_settings(const char **runc, int *fail_open)
{
	config_load(&cfg, CFG_ALL);
	if (cfg.error[0])
		return refuse(fmt("cgfence: %s; refusing to create %s", cfg.error, args.id));
	*fail_open = strcmp(cfg.fail_mode, "open") == 0;
	if (!*fail_open && strcmp(cfg.fail_mode, "closed") != 0)
		return refuse(
			fmt("cgfence: fail_mode is \"%s\", expected \"closed\" or \"open\"; refusing to create %s",
			    cfg.fail_mode, args.id));
	*runc = runc_resolve(cfg.runc);
	if (!*runc)
		return refuse(runc_error(cfg.runc, errno));
	return 0;
}

/*
 * A container that asks for nothing on a node without a defaultProfile needs no daemon, so
 * none is asked: the daemon would answer "no fence" anyway, and this way such containers
 * start while it is down. Anything uncertain (config.json unreadable, the daemon's note
 * missing) goes the daemon's way, which fails closed.
 */
static int needs_daemon(const char *bundle)
{
	struct bundle_config bc;
	char err[512];
	if (bundle_config_read(bundle, 1, &bc, err, sizeof(err)) < 0 || bc.annotated)
		return 1;
	return node_hint_read(cfg.node_hint, err, sizeof(err)) != HINT_NO_DEFAULT_PROFILE;
}

/*
 * How long to wait for a pushed attach outcome before asking for it. The daemon pushes once
 * it has fenced the init runc handed over with the seccomp listener, which runc did before
 * create returned; past this (a daemon that never got the hand-off) the launcher asks, and
 * takes whichever conclusive line comes first.
 */
#define PUSH_WAIT_MS 2000

/*
 * The attach of a container whose prepare offered a push: the daemon began the attach at the
 * seccomp listener hand-off and sends its outcome on this connection unasked, so no request
 * is needed. The outcome names the pid the daemon fenced: when runc's pid file names another,
 * the launcher asks for the attach with its own pid, and the daemon undoes the fence and
 * refuses (fence-manager.ts, confirmEarly). A pushed line that comes after the request was
 * sent is taken the same way.
 */
static enum dc_status await_attach(int *conn, const char *bundle, const char *root, long pid, struct dc_result *r)
{
	enum dc_status st = *conn >= 0 ? dc_read(conn, PUSH_WAIT_MS, r) : DC_PENDING;
	if (st == DC_BROKEN && !r->gone)
		return st;
	if (st == DC_OK || st == DC_REFUSED) {
		if (!r->pushed) {
			r->status = DC_BROKEN;
			r->msg = "a reply to no request came instead of the attach's outcome";
			return DC_BROKEN;
		}
		if (st == DC_REFUSED || r->pid == pid)
			return st;
	}
	/*
	 * No outcome in time, a connection the daemon closed (it restarted: call connects
	 * afresh), or an outcome for another pid than the pid file names: ask. Until the answer
	 * comes, a pushed line decides only if it is a refusal or names this pid.
	 */
	st = call(conn, "attach", bundle, root, pid, r);
	while (st != DC_BROKEN && r->pushed && st != DC_REFUSED && r->pid != pid) {
		if (*conn < 0) {
			r->status = DC_BROKEN;
			r->msg = "the connection was closed before the attach was answered";
			return DC_BROKEN;
		}
		st = dc_read(conn, -1, r);
	}
	return st;
}

/*
 * Fenced runc create with cargv (the caller's own line, or the create a run becomes).
 * Returns 0 once the container exists and is fenced (or needs no fence), with its init pid
 * in *pid_out; otherwise an exit code, the reason already reported.
 * With become_runc, a container that turns out to need no attach (nothing to fence,
 * "fence":false, or created unfenced in fail-open mode) is handed to runc by exec instead of
 * run as a child and waited for: runc is then the process the shim started, as without
 * cgfence, and the create pays no fork, wait or wake-up of ours (nor returns). `run` cannot:
 * it needs the init pid and stays in front of the container.
 */
static int create_on(int *conn, char **cargv, const char *pid_file, const char *runc, int fail_open, int become_runc,
		     long *pid_out)
{
	char bundle_buf[PATH_MAX], root_buf[PATH_MAX];
	struct dc_result r;

	/* Without the init pid there is nothing to attach to; say so before anything is made. */
	if (!pid_file)
		return refuse(fmt("cgfence: runc create was called without --pid-file, so the container's "
				  "init cannot be fenced; refusing to create %s",
				  args.id));

	const char *bundle = absolute(args.bundle, bundle_buf, sizeof(bundle_buf));
	const char *root = args.root ? absolute(args.root, root_buf, sizeof(root_buf)) : "";
	if (!bundle || !root)
		return refuse(fmt("cgfence: cannot resolve the bundle or root path (%s); refusing to create %s",
				  strerror(errno), args.id));

	int daemon = needs_daemon(bundle);
	int push = 0;
	if (daemon) {
		switch (call(conn, "prepare", bundle, root, 0, &r)) {
		case DC_OK:
			push = r.push_offered;
			/* "fence":false: the daemon kept nothing for this container, so there is nothing to attach. */
			if (r.no_fence) {
				close(*conn);
				*conn = -1;
				daemon = 0;
			}
			break;
		case DC_REFUSED: return refuse(fmt("cgfence: %s", r.msg));
		case DC_PENDING: /* only a read with a timeout says this; call waits as the socket does */
		case DC_BROKEN:
			return refuse(fmt(
				"cgfence: daemon at %s gave no usable answer to prepare (%s); refusing to create %s",
				cfg.socket, r.msg, args.id));
		case DC_UNREACHABLE:
			if (!fail_open)
				return refuse(fmt(
					"cgfence: daemon unreachable at %s (%s); refusing to create %s (fail-closed)",
					cfg.socket, r.msg, args.id));
			{
				char reason[1024];
				const char *spool;
				snprintf(reason, sizeof(reason), "daemon unreachable at %s (%s)", cfg.socket, r.msg);
				/* Fail-open is allowed only if it leaves a trace: unrecorded, it would be a silent downgrade. */
				if (spool_fail_open(cfg.spool_dir, args.id, bundle, reason, &spool) < 0)
					return refuse(fmt(
						"cgfence: %s and the fail-open record could not be written to %s (%s); "
						"refusing to create %s",
						reason, spool, strerror(errno), args.id));
				report("warning",
				       fmt("cgfence: %s; creating %s unfenced (fail-open)", reason, args.id));
				daemon = 0;
			}
		}
	}

	if (!daemon && become_runc) {
		if (*conn >= 0) {
			close(*conn);
			*conn = -1;
		}
		runc_exec(runc, cargv);
		return refuse(runc_error(runc, errno));
	}

	int st = runc_run(runc, cargv, 0);
	if (st < 0)
		return refuse(runc_error(runc, errno));
	if (st != 0)
		return exit_code(st); /* runc has already said why, in its own log */

	long pid = read_pid(pid_file);
	if (pid < 0) {
		int e = errno;
		const char *note = remove_container(runc);
		return refuse(fmt("cgfence: cannot read the init pid from %s (%s); removed container %s%s", pid_file,
				  strerror(e), args.id, note));
	}
	*pid_out = pid;
	if (!daemon)
		return 0;

	enum dc_status ast =
		push ? await_attach(conn, bundle, root, pid, &r) : call(conn, "attach", bundle, root, pid, &r);
	if (ast == DC_OK)
		return 0;

	const char *why = r.msg;
	const char *note = remove_container(runc);
	switch (ast) {
	case DC_REFUSED: return refuse(fmt("cgfence: %s%s", why, note));
	case DC_UNREACHABLE:
		return refuse(fmt("cgfence: daemon unreachable at %s (%s) after runc create; removed container %s%s",
				  cfg.socket, why, args.id, note));
	default:
		return refuse(fmt("cgfence: daemon at %s gave no usable answer to attach (%s); removed container %s%s",
				  cfg.socket, why, args.id, note));
	}
}

static int create_container(char **cargv, const char *pid_file, const char *runc, int fail_open, int become_runc,
			    long *pid_out)
{
	int conn = -1;
	int rc = create_on(&conn, cargv, pid_file, runc, fail_open, become_runc, pid_out);
	if (conn >= 0)
		close(conn);
	return rc;
}

static int create(void)
{
	const char *runc;
	int fail_open;
	long pid;
	int rc = load_settings(&runc, &fail_open);
	return rc ? rc : create_container(args.argv, args.pid_file, runc, fail_open, 1, &pid);
}

/* runc's global flags, then cmd, then "--" (an id may start with '-'), then the id. */
static char **command_line(const char *runc, const char *cmd, char **extra, int nextra)
{
	int nglobal = args.sub - 1;
	char **argv = malloc(sizeof(char *) * (size_t)(nglobal + nextra + 5));
	if (!argv)
		return NULL;
	int n = 0;
	argv[n++] = (char *)runc;
	for (int i = 1; i < args.sub; i++)
		argv[n++] = args.argv[i];
	argv[n++] = (char *)cmd;
	for (int i = 0; i < nextra; i++)
		argv[n++] = extra[i];
	argv[n++] = "--";
	argv[n++] = (char *)args.id;
	argv[n] = NULL;
	return argv;
}

/*
 * runc run = create (fenced) + start, and in the foreground: wait for the init, forward
 * signals to it, delete the container unless --keep, exit with the init's status. The init
 * gets our stdio directly, as with a detached run (runc run copies through pipes instead; a
 * program sees a different fd, the same bytes). A foreground run with process.terminal needs
 * runc's own pty relay, which runs only inside runc run: that one is refused.
 */
static int run(void)
{
	char bundle_buf[PATH_MAX], tmpdir[] = "/tmp/cgfence-run-XXXXXX", tmp_pid[sizeof(tmpdir) + 8];
	const char *runc;
	int fail_open;
	int rc = load_settings(&runc, &fail_open);
	if (rc)
		return rc;

	if (!args.detach) {
		struct bundle_config bc;
		char err[1024];
		const char *bundle = absolute(args.bundle, bundle_buf, sizeof(bundle_buf));
		if (!bundle || bundle_config_read(bundle, 0, &bc, err, sizeof(err)) < 0)
			return refuse(fmt("cgfence: %s; refusing to run %s", bundle ? err : strerror(errno), args.id));
		if (bc.terminal)
			return refuse(
				fmt("cgfence: runc run in the foreground with process.terminal=true is not "
				    "supported (its pty relay exists only inside runc run); use runc run --detach "
				    "--console-socket, or create and start; refusing to run %s",
				    args.id));
	}

	const char *pid_file = args.pid_file;
	if (!pid_file) {
		if (!mkdtemp(tmpdir))
			return refuse(fmt("cgfence: cannot make a directory for the pid file (%s); refusing to run %s",
					  strerror(errno), args.id));
		snprintf(tmp_pid, sizeof(tmp_pid), "%s/pid", tmpdir);
		pid_file = tmp_pid;
	}

	char *extra[12];
	char preserve[64];
	int nextra = 0;
	if (args.bundle) {
		extra[nextra++] = "--bundle";
		extra[nextra++] = (char *)args.bundle;
	}
	extra[nextra++] = "--pid-file";
	extra[nextra++] = (char *)pid_file;
	if (args.console_socket) {
		extra[nextra++] = "--console-socket";
		extra[nextra++] = (char *)args.console_socket;
	}
	if (args.no_pivot)
		extra[nextra++] = "--no-pivot";
	if (args.no_new_keyring)
		extra[nextra++] = "--no-new-keyring";
	if (args.preserve_fds) {
		snprintf(preserve, sizeof(preserve), "--preserve-fds=%s", args.preserve_fds);
		extra[nextra++] = preserve;
	}
	char **cargv = command_line(runc, "create", extra, nextra);
	char **sargv = command_line(runc, "start", NULL, 0);
	if (!cargv || !sargv)
		return refuse("cgfence: out of memory");

	/*
	 * Foreground: signals wait (blocked) from before the create, so none is lost or kills us
	 * half-way; runc create's init is reparented to us when runc create exits, as runc run's
	 * own init is its child, so that we can wait for it.
	 */
	sigset_t all, old;
	if (!args.detach) {
		sigfillset(&all);
		int sync_sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS };
		for (size_t i = 0; i < sizeof(sync_sigs) / sizeof(sync_sigs[0]); i++)
			sigdelset(&all, sync_sigs[i]);
		sigprocmask(SIG_BLOCK, &all, &old);
		runc_child_sigmask(&old);
		if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
			return refuse(fmt("cgfence: cannot become a subreaper (%s); refusing to run %s",
					  strerror(errno), args.id));
	}

	long pid = 0;
	rc = create_container(cargv, pid_file, runc, fail_open, 0, &pid);
	if (pid_file == tmp_pid) {
		unlink(tmp_pid);
		rmdir(tmpdir);
	}
	if (rc)
		return rc;

	int st = runc_run(runc, sargv, 0);
	if (st != 0) {
		const char *why = st < 0 ? strerror(errno) : "see runc's message";
		const char *note = remove_container(runc);
		return refuse(fmt("cgfence: runc start %s failed (%s); removed the container%s", args.id, why, note));
	}
	if (args.detach)
		return 0;

	int status = 0;
	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&all, &info);
		if (sig < 0)
			continue; /* EINTR */
		if (sig == SIGCHLD) {
			int ws;
			pid_t w;
			int done = 0;
			while ((w = waitpid(-1, &ws, WNOHANG)) > 0)
				if (w == (pid_t)pid) {
					status = ws;
					done = 1;
				}
			if (done)
				break;
			continue;
		}
		if (sig == SIGWINCH)
			continue; /* no terminal of ours to resize */
		kill((pid_t)pid, sig);
	}
	if (!args.keep)
		(void)remove_container(runc);
	return exit_code(status);
}

int main(int argc, char **argv)
{
	switch (args_parse(argc, argv, &args)) {
	case ARGS_CREATE: return create();
	case ARGS_RUN: return run();
	case ARGS_REFUSE: return refuse(fmt("cgfence: %s", args.why));
	case ARGS_PASSTHROUGH: break;
	}

	/* Pass-through: find runc and become it. Anything more here costs every runc call. */
	config_load(&cfg, CFG_RUNC);
	if (cfg.error[0])
		return refuse(fmt("cgfence: %s", cfg.error));
	const char *runc = runc_resolve(cfg.runc);
	if (runc)
		runc_exec(runc, argv);
	report("error", runc_error(cfg.runc, errno));
	return 127;
}
