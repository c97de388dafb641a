/*
 * The runc command line, read the way runc 1.1 reads it (urfave/cli 1.22 on Go's flag
 * package), so that the container we fence is the container runc creates.
 */
#ifndef CGFENCE_RUNC_ARGS_H
#define CGFENCE_RUNC_ARGS_H

enum args_kind {
	ARGS_PASSTHROUGH, /* a command that certainly starts no container: hand to runc untouched */
	ARGS_CREATE,	  /* a create read exactly: fence it */
	ARGS_RUN,	  /* a run read exactly: fence it as create + start (+ wait) */
	ARGS_REFUSE	  /* anything else that might start a container: refuse, why says why */
};

struct runc_args {
	int argc;
	char **argv;
	int sub;	  /* index of the subcommand in argv, -1 if none */
	const char *root; /* global --root, NULL if absent */
	const char *log;  /* global --log, NULL if absent */
	int log_json;	  /* --log-format json */
	/* create and run */
	const char *bundle; /* as given; NULL means the cwd */
	const char *pid_file;
	const char *console_socket;
	const char *preserve_fds; /* as given, NULL if absent */
	int no_pivot, no_new_keyring;
	/* run only */
	int detach, keep, no_subreaper;
	const char *id;
	const char *why; /* set with ARGS_REFUSE */
};

enum args_kind args_parse(int argc, char **argv, struct runc_args *a);

#endif
