#define _GNU_SOURCE
#include "runc-exec.h"

#include <errno.h>
#include <fcntl.h>
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

int runc_run(const char *runc, char **argv, int quiet)
{
	int err_pipe[2];

	/* Tells the parent whether exec itself failed, which a wait status cannot. */
	if (pipe2(err_pipe, O_CLOEXEC) < 0)
		return -1;
	pid_t ppid = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(err_pipe[0]);
		close(err_pipe[1]);
		errno = e;
		return -1;
	}
	if (pid == 0) {
		close(err_pipe[0]);
		/*
		 * The shim kills the runtime binary when its context ends; runc must
		 * go with us, as it would if the shim had started it directly.
		 */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (have_child_mask)
			sigprocmask(SIG_SETMASK, &child_mask, NULL);
		if (getppid() != ppid)
			_exit(127);
		if (quiet) {
			int null = open("/dev/null", O_RDWR);
			if (null >= 0) {
				dup2(null, 0);
				dup2(null, 1);
				dup2(null, 2);
				if (null > 2)
					close(null);
			}
		}
		argv[0] = (char *)runc;
		execv(runc, argv);
		int e = errno;
		(void)!write(err_pipe[1], &e, sizeof(e));
		_exit(127);
	}
	close(err_pipe[1]);

	int exec_errno = 0;
	ssize_t n;
	do
		n = read(err_pipe[0], &exec_errno, sizeof(exec_errno));
	while (n < 0 && errno == EINTR);
	close(err_pipe[0]);

	int status;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	if (n == (ssize_t)sizeof(exec_errno)) {
		errno = exec_errno;
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
