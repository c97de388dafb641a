#include "bpf-objects.h"

#include "connect-audit.skel.h"
#include "exec-fence.skel.h"
#include "exited-tasks.skel.h"
#include "exec-lsm.skel.h"
#include "learn-net.skel.h"
#include "learn-syscalls.skel.h"
#include "net-fence.skel.h"
#include "tamper-watch.skel.h"
#include "verifier-reject.skel.h"

#include "cgfence-abi.h"
#include "net-abi.h"
#include "connect-audit-abi.h"
#include "tamper-abi.h"
#include "learn-abi.h"

// The TypeScript decoder (src/kernel/abi.ts) mirrors these layouts.
static_assert(sizeof(struct cgfence_fence) == 32, "cgfence_fence layout changed");
static_assert(sizeof(struct cgfence_exec_key) == 24, "cgfence_exec_key layout changed");
static_assert(sizeof(struct cgfence_exec_allow) == 16, "cgfence_exec_allow layout changed");
static_assert(sizeof(struct cgfence_exec_event) == 384, "cgfence_exec_event layout changed");
static_assert(sizeof(struct cgfence_exec_rate) == 24, "cgfence_exec_rate layout changed");
static_assert(sizeof(struct cgfence_exec_throttle) == 392, "cgfence_exec_throttle layout changed");
// src/kernel/net-abi.ts mirrors these.
static_assert(sizeof(struct cgfence_net_key4) == 24, "cgfence_net_key4 layout changed");
static_assert(sizeof(struct cgfence_net_key6) == 32, "cgfence_net_key6 layout changed");
static_assert(sizeof(struct cgfence_net_rule) == 8, "cgfence_net_rule layout changed");
static_assert(sizeof(struct cgfence_net_config) == 16, "cgfence_net_config layout changed");
static_assert(sizeof(struct cgfence_net_stats) == 48, "cgfence_net_stats layout changed");
static_assert(sizeof(struct cgfence_net_flow_key) == 32, "cgfence_net_flow_key layout changed");
static_assert(sizeof(struct cgfence_net_flow) == 24, "cgfence_net_flow layout changed");
static_assert(sizeof(struct cgfence_net_event) == 112, "cgfence_net_event layout changed");
// src/kernel/connect-audit.ts mirrors these.
static_assert(sizeof(struct cgfence_connect_watch) == 8, "cgfence_connect_watch layout changed");
static_assert(sizeof(struct cgfence_connect_event) == 72, "cgfence_connect_event layout changed");
// src/kernel/tamper-abi.ts mirrors these.
static_assert(sizeof(struct cgfence_tamper_key) == 8, "cgfence_tamper_key layout changed");
static_assert(sizeof(struct cgfence_tamper_event) == 360, "cgfence_tamper_event layout changed");
// src/kernel/learn-abi.ts mirrors these.
static_assert(sizeof(struct cgfence_learn_syscalls) == 2056, "cgfence_learn_syscalls layout changed");
static_assert(sizeof(struct cgfence_learn_cgroup) == 16, "cgfence_learn_cgroup layout changed");
static_assert(sizeof(struct cgfence_learn_net_config) == 24, "cgfence_learn_net_config layout changed");
static_assert(sizeof(struct cgfence_learn_peer_key) == 32, "cgfence_learn_peer_key layout changed");
static_assert(sizeof(struct cgfence_learn_port_key) == 32, "cgfence_learn_port_key layout changed");
static_assert(sizeof(struct cgfence_learn_exec_key) == 24, "cgfence_learn_exec_key layout changed");
static_assert(sizeof(struct cgfence_learn_exec) == 1304, "cgfence_learn_exec layout changed");

namespace cgfence {

const void *EmbeddedObject(const std::string &name, size_t *size) {
  if (name == "connect-audit") return connect_audit_bpf__elf_bytes(size);
  if (name == "exec-fence") return exec_fence_bpf__elf_bytes(size);
  if (name == "exited-tasks") return exited_tasks_bpf__elf_bytes(size);
  if (name == "exec-lsm") return exec_lsm_bpf__elf_bytes(size);
  if (name == "learn-net") return learn_net_bpf__elf_bytes(size);
  if (name == "learn-syscalls") return learn_syscalls_bpf__elf_bytes(size);
  if (name == "net-fence") return net_fence_bpf__elf_bytes(size);
  if (name == "tamper-watch") return tamper_watch_bpf__elf_bytes(size);
  if (name == "verifier-reject") return verifier_reject_bpf__elf_bytes(size);
  return nullptr;
}

const char *EmbeddedObjectNames() {
  return "connect-audit, exec-fence, exec-lsm, exited-tasks, learn-net, learn-syscalls, net-fence, tamper-watch, "
         "verifier-reject";
}

}  // namespace cgfence
