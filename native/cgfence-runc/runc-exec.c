#define _GNU_SOURCE
#include "runc-exec.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char found[PATH_MAX];
static sigset_t child_mask;
static int have_child_mask;

void runc_child_sigmask(const sigset_t *mask)
{
	child_mask = *mask;
	have_child_mask = 1;
}

static int is_self(const struct stat *st)
{
	static struct stat self;
	static int have_self = -1;

	if (have_self < 0)
		have_self = stat("/proc/self/exe", &self) == 0;
	return have_self && st->st_dev == self.st_dev && st->st_ino == self.st_ino;
}

const char *runc_resolve(const char *configured)
{
	struct stat st;

	if (configured) {
		if (stat(configured, &st) < 0)
			return NULL;
		if (is_self(&st)) {
			errno = ELOOP;
			return NULL;
		}
		return configured;
	}

	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	int saw_self = 0;
	while (*path) {
		const char *colon = strchr(path, ':');
		size_t len = colon ? (size_t)(colon - path) : strlen(path);
		/* Relative PATH entries (and "" = cwd) would run whatever the bundle dir holds. */
		if (len && path[0] == '/' && len + sizeof("/runc") <= sizeof(found)) {
			memcpy(found, path, len);
			memcpy(found + len, "/runc", sizeof("/runc"));
			if (stat(found, &st) == 0 && S_ISREG(st.st_mode) && access(found, X_OK) == 0) {
				if (!is_self(&st))
					return found;
				saw_self = 1;
			}
		}
		path += len;
		if (*path == ':')
			path++;
	}
	errno = saw_self ? ELOOP : ENOENT;
	return NULL;
}

void runc_exec(const char *runc, char **argv)
{
	argv[0] = (char *)runc;
	execv(runc, argv);
}

/* What the child of runc_run needs, and where it leaves the exec's errno (the memory is shared). */
struct spawn {
	const char *runc;
	char **argv;
	int quiet;
	pid_t ppid;
	sigset_t mask;
	volatile int exec_errno;
};

/*
 * The child, on its own stack in our memory until it execs: system calls only, nothing that
 * allocates or touches state the parent relies on.
 */
static int spawn_child(void *arg)
{
	struct spawn *s = arg;
	/*
	 * The shim kills the runtime binary when its context ends; runc must
	 * go with us, as it would if the shim had started it directly.
	 */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != s->ppid) {
		s->exec_errno = ESRCH;
		_exit(127);
	}
	if (s->quiet) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
			if (null > 2)
				close(null);
		}
	}
	sigprocmask(SIG_SETMASK, &s->mask, NULL);
	s->argv[0] = (char *)s->runc;
	execv(s->runc, s->argv);
	s->exec_errno = errno ? errno : ENOEXEC;
	_exit(127);
}

/*
 * A vfork (CLONE_VM | CLONE_VFORK), not a fork: we are suspended until the child has exec'd
 * runc or failed to, so there is no copy of our page tables to make and no copy-on-write
 * faults to take, and the exec's errno comes back through shared memory rather than a pipe.
 * On a paravirtualized guest, where a page fault costs ~10-15 µs, the create's way to runc's
 * exec went from 5.4 to 3.9 ms (docs/exec-performance.md, ninth round). The child runs on a
 * stack of its own, as musl's posix_spawn does, with every signal blocked until it has set
 * the mask runc gets. The launcher installs no signal handlers, so none can run in the child
 * on our memory either.
 */
int runc_run(const char *runc, char **argv, int quiet)
{
	static char stack[16384] __attribute__((aligned(16)));
	struct spawn s = { .runc = runc, .argv = argv, .quiet = quiet, .ppid = getpid(), .exec_errno = 0 };
	sigset_t all, old;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	s.mask = have_child_mask ? child_mask : old;
	pid_t pid = clone(spawn_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, &s);
	int e = errno;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		errno = e;
		return -1;
	}

	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	if (s.exec_errno) {
		errno = s.exec_errno;
		return -1;
	}
	return status;
}

int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}
