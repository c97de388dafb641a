/* libFuzzer target: the fd-holder's reading of runc's seccomp-agent state (native/fd-holder/runc-state.c). */
#include "../../native/fd-holder/runc-state.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char key[1025];
	int pid = 0;
	const char *why = NULL;
	memset(key, 'x', sizeof(key));
	int st = runc_state_parse((const char *)data, size, key, sizeof(key), &pid, &why);
	if (st == 1 && (pid < 1 || strnlen(key, sizeof(key)) == sizeof(key) || key[0] == '\0'))
		abort();
	if (st < 0 && !why)
		abort();
	/* A complete state stays complete and the same with whitespace after it. */
	if (st == 1 && size < 4096) {
		char *more = malloc(size + 2);
		char key2[1025];
		int pid2 = 0;
		memcpy(more, data, size);
		more[size] = '\n';
		more[size + 1] = ' ';
		if (runc_state_parse(more, size + 2, key2, sizeof(key2), &pid2, &why) != 1 || pid2 != pid ||
		    strcmp(key, key2))
			abort();
		free(more);
	}
	return 0;
}
