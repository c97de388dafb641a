/* libFuzzer target: the launcher's reading of a bundle's config.json (native/cgfence-runc/bundle-config.c). */
#include "../../native/cgfence-runc/bundle-config.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bundle_config bc;
	const char *why = NULL;
	if (bundle_config_parse((const char *)data, size, &bc, &why) < 0 && !why)
		abort();
	return 0;
}
