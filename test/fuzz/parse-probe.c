/*
 * The strict parsers on one input each, for test/strict-parsers.test.ts:
 *   parse-probe runc-state|reply|bundle-config|node-hint   (input on stdin)
 * prints the verdict on one line (keys as hex, so every byte is visible).
 */
#define _GNU_SOURCE
#include "../../native/cgfence-runc/bundle-config.h"
#include "../../native/cgfence-runc/node-hint.h"
#include "../../native/cgfence-runc/reply.h"
#include "../../native/fd-holder/runc-state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	static char buf[(2 << 20) + 2];
	size_t n = fread(buf, 1, sizeof(buf) - 1, stdin);
	const char *why = "";
	if (argc != 2)
		return 2;
	if (!strcmp(argv[1], "runc-state")) {
		char key[1025];
		int pid = 0;
		int st = runc_state_parse(buf, n, key, sizeof(key), &pid, &why);
		if (st != 1) {
			printf("%d %s\n", st, st ? why : "incomplete");
			return 0;
		}
		printf("1 %d ", pid);
		for (size_t i = 0; key[i]; i++)
			printf("%02x", (unsigned char)key[i]);
		printf("\n");
	} else if (!strcmp(argv[1], "reply")) {
		char msg[8192];
		static const char *const kinds[] = { "ok", "refused", "malformed" };
		int no_fence;
		enum reply_kind k = reply_parse_fence(buf, n, msg, sizeof(msg), &no_fence);
		printf("%s %s\n", kinds[k], k == REPLY_OK ? (no_fence ? "no-fence" : "") : msg);
	} else if (!strcmp(argv[1], "bundle-config")) {
		struct bundle_config bc;
		if (bundle_config_parse(buf, n, &bc, &why) < 0)
			printf("error %s\n", why);
		else
			printf("annotated=%d terminal=%d\n", bc.annotated, bc.terminal);
	} else if (!strcmp(argv[1], "node-hint")) {
		static const char *const h[] = { "none", "profile", "unknown" };
		enum node_hint k = node_hint_parse(buf, n, &why);
		printf("%s %s\n", h[k], k == HINT_UNKNOWN ? why : "");
	} else {
		return 2;
	}
	return 0;
}
