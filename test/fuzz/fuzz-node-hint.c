/* libFuzzer target: the launcher's reading of the daemon's node hint (native/cgfence-runc/node-hint.c). */
#include "../../native/cgfence-runc/node-hint.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	const char *why = NULL;
	memcpy(text, data, size);
	if (node_hint_parse(text, size, &why) == HINT_UNKNOWN && !why)
		abort();
	free(text);
	return 0;
}
