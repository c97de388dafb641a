/* libFuzzer target: the launcher's command-line reading (native/cgfence-runc/args.c). Input: NUL-separated arguments. */
#include "../../native/cgfence-runc/args.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	char *argv[66];
	int argc = 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	argv[argc++] = "runc";
	for (size_t i = 0; i <= size && argc < 65;) {
		argv[argc++] = buf + i;
		i += strlen(buf + i) + 1;
	}
	argv[argc] = NULL;
	struct runc_args a;
	enum args_kind k = args_parse(argc, argv, &a);
	if (k == ARGS_CREATE || k == ARGS_RUN) {
		/* A fenced line names a non-empty id that is one of the arguments, after the command. */
		int found = 0;
		for (int i = a.sub + 1; i < argc; i++)
			found |= argv[i] == a.id;
		if (!a.id || !a.id[0] || !found || a.sub < 1)
			abort();
		if (strcmp(argv[a.sub], k == ARGS_CREATE ? "create" : "run"))
			abort();
	}
	if (k == ARGS_REFUSE && (!a.why || !a.why[0]))
		abort();
	free(buf);
	return 0;
}
