// peerCredentials(fd): who is at the other end of a unix socket (SO_PEERCRED: the pid, uid
// and gid the kernel recorded at connect), so that the daemon can name the actor of a
// request in the audit log. Node has no API for it.
#pragma once
#include <napi.h>

namespace cgfence {

void InitPeerCredentials(Napi::Env env, Napi::Object exports);

}  // namespace cgfence
