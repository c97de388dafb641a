/* libFuzzer target: the launcher's runc.conf reader (native/cgfence-runc/config.c). */
#include "../../native/cgfence-runc/config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > CFG_MAX_FILE)
		return 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	struct config c;
	memset(&c, 0, sizeof(c));
	c.file = "fuzz.conf";
	int rc = config_parse(&c, text, size, CFG_ALL);
	if (rc < 0 && !c.error[0])
		abort();
	if (rc == 0) {
		const char *v[] = { c.socket, c.runc, c.fail_mode, c.spool_dir, c.node_hint };
		for (size_t i = 0; i < 5; i++)
			/* A value is one line of the file, never more, and lies inside it. */
			if (v[i] && (v[i] < text || v[i] > text + size || strchr(v[i], '\n')))
				abort();
	}
	free(text);
	return 0;
}
