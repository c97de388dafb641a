/* libFuzzer target: the launcher's reading of daemon replies (native/cgfence-runc/reply.c). */
#include "../../native/cgfence-runc/reply.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char msg[256];
	enum reply_kind k = reply_parse((const char *)data, size, msg, sizeof(msg));
	if (strnlen(msg, sizeof(msg)) == sizeof(msg))
		abort();
	/* Only a complete object can say yes. */
	if (k == REPLY_OK) {
		size_t i = 0, j = size;
		while (i < size && strchr(" \t\r\n", data[i]) && data[i])
			i++;
		while (j > i && strchr(" \t\r\n", data[j - 1]) && data[j - 1])
			j--;
		if (j - i < 11 || data[i] != '{' || data[j - 1] != '}')
			abort();
	}
	/* The fence-reading variant agrees on the kind, and says "no fence" only for a yes that
	 * holds "fence":false (so at least that much text). */
	char msg2[256];
	int no_fence = -1;
	enum reply_kind k2 = reply_parse_fence((const char *)data, size, msg2, sizeof(msg2), &no_fence);
	if (k2 != k || (no_fence != 0 && no_fence != 1) || (no_fence && (k2 != REPLY_OK || size < 24)))
		abort();
	return 0;
}
