#include "bpf-objects.h"

#include "exec-fence.skel.h"
#include "verifier-reject.skel.h"

#include "cgfence-abi.h"

// The TypeScript decoder (src/kernel/abi.ts) mirrors these layouts.
static_assert(sizeof(struct cgfence_fence) == 32, "cgfence_fence layout changed");
static_assert(sizeof(struct cgfence_exec_key) == 24, "cgfence_exec_key layout changed");
static_assert(sizeof(struct cgfence_exec_event) == 336, "cgfence_exec_event layout changed");

namespace cgfence {

const void *EmbeddedObject(const std::string &name, size_t *size) {
  if (name == "exec-fence") return exec_fence_bpf__elf_bytes(size);
  if (name == "verifier-reject") return verifier_reject_bpf__elf_bytes(size);
  return nullptr;
}

const char *EmbeddedObjectNames() { return "exec-fence, verifier-reject"; }

}  // namespace cgfence
