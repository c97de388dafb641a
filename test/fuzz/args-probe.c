/*
 * The launcher's command-line reading, one line at a time, for the differential test against
 * the real runc (test/cgfence-runc-differential.test.ts). Input: one command line per line,
 * arguments separated by \x1f. Output per line: KIND \x1f BUNDLE \x1f ID \n, KIND one of
 * P (pass through), C (create), R (run), X (refuse); BUNDLE is "" when none was given.
 */
#define _GNU_SOURCE
#include "../../native/cgfence-runc/args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, stdin)) > 0) {
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		char *argv[256];
		int argc = 0;
		argv[argc++] = "runc";
		if (n > 0)
			for (char *tok = line;;) {
				char *sep = strchr(tok, '\x1f');
				if (sep)
					*sep = '\0';
				if (argc < 255)
					argv[argc++] = tok;
				if (!sep)
					break;
				tok = sep + 1;
			}
		argv[argc] = NULL;
		struct runc_args a;
		static const char kinds[] = { 'P', 'C', 'R', 'X' };
		enum args_kind k = args_parse(argc, argv, &a);
		printf("%c\x1f%s\x1f%s\n", kinds[k], (k == ARGS_CREATE || k == ARGS_RUN) && a.bundle ? a.bundle : "",
		       (k == ARGS_CREATE || k == ARGS_RUN) ? a.id : "");
		fflush(stdout);
	}
	free(line);
	return 0;
}
