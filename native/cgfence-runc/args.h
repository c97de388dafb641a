/* The runc command line as containerd's shim (go-runc) builds it. */
#ifndef CGFENCE_RUNC_ARGS_H
#define CGFENCE_RUNC_ARGS_H

enum args_kind {
	ARGS_PASSTHROUGH,   /* not ours to look at: hand to runc untouched */
	ARGS_CREATE,        /* a create we understood: fence it */
	ARGS_UNSUPPORTED    /* a create we cannot read safely: refuse it */
};

struct runc_args {
	int argc;
	char **argv;
	int sub;                /* index of the subcommand in argv, -1 if none */
	const char *root;       /* global --root, NULL if absent */
	const char *log;        /* global --log, NULL if absent */
	int log_json;           /* --log-format json */
	/* create only */
	const char *bundle;     /* as given; NULL means the cwd */
	const char *pid_file;
	const char *id;
	const char *bad_flag;   /* set with ARGS_UNSUPPORTED */
};

enum args_kind args_parse(int argc, char **argv, struct runc_args *a);

#endif
