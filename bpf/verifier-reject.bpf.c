// SPDX-License-Identifier: GPL-2.0-only
/*
 * A program the verifier must reject (it reads past the end of a map value). It is never
 * attached: it exists so that the tests prove a failed load reaches JavaScript with the
 * errno, the operation and the verifier's log.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} reject_values SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int reject(void *ctx)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&reject_values, &zero);

	if (!v)
		return 0;
	return *(volatile __u64 *)((char *)v + 64);
}
