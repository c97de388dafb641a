// One JavaScript error shape for everything that crosses the native boundary, modelled on
// Node's SystemError: message "<op>: <strerror> (<detail>)", code ("EPERM"), errno
// (negative, as in Node), syscall (the operation), and for a failed BPF load the verifier
// log in `verifierLog`.
#pragma once
#include <napi.h>
#include <string>

namespace cgfence {

Napi::Error SystemError(Napi::Env env, const std::string &op, int err, const std::string &detail = "",
                        const std::string &verifier_log = "");

// Convenience for the common "throw and return" pattern in methods.
[[noreturn]] void ThrowSystemError(Napi::Env env, const std::string &op, int err, const std::string &detail = "",
                                   const std::string &verifier_log = "");

}  // namespace cgfence
