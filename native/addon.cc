// The cgfence addon: libbpf and libseccomp operations for the TypeScript daemon.
// One file per exported concept: bpf-object, bpf-link, ring-buffer, seccomp.
#include <napi.h>

#include "audit-netlink.h"
#include "bpf-link.h"
#include "bpf-object.h"
#include "peer-credentials.h"
#include "rename-exchange.h"
#include "ring-buffer.h"
#include "seccomp.h"
#include "seccomp-notify.h"

#include <bpf/libbpf.h>

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("BpfObject", cgfence::BpfObject::Init(env));
  exports.Set("BpfLink", cgfence::BpfLink::Init(env));
  exports.Set("RingBuffer", cgfence::RingBuffer::Init(env));
  cgfence::InitSeccomp(env, exports);
  exports.Set("SeccompNotify", cgfence::SeccompNotify::Init(env));
  exports.Set("AuditNetlink", cgfence::AuditNetlink::Init(env));
  cgfence::InitPeerCredentials(env, exports);
  cgfence::InitRenameExchange(env, exports);
  exports.Set("libbpfVersion", Napi::String::New(env, libbpf_version_string()));
  return exports;
}

NODE_API_MODULE(cgfence, Init)
