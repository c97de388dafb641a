#include "errors.h"

#include <cstring>

namespace cgfence {

static const char *ErrnoName(int err) {
  struct Name {
    int err;
    const char *name;
  };
#define E(x) \
  Name { x, #x }
  static const Name kNames[] = {
      E(EPERM),   E(ENOENT),  E(ESRCH),     E(EINTR),  E(EIO),          E(EBADF),     E(EAGAIN),
      E(ENOMEM),  E(EACCES),  E(EFAULT),    E(EBUSY),  E(EEXIST),       E(ENOTDIR),   E(EISDIR),
      E(EINVAL),  E(ENFILE),  E(EMFILE),    E(ENOSPC), E(ERANGE),       E(E2BIG),     E(ENOSYS),
      E(ENOTSUP), E(ENODATA), E(EOVERFLOW), E(ELOOP),  E(ENAMETOOLONG), E(ENOTEMPTY), E(ESTALE),
  };
#undef E
  for (const Name &n : kNames)
    if (n.err == err) return n.name;
  return "EUNKNOWN";
}

Napi::Error SystemError(Napi::Env env, const std::string &op, int err, const std::string &detail,
                        const std::string &verifier_log) {
  if (err < 0) err = -err;
  std::string msg = op + ": " + strerror(err);
  if (!detail.empty()) msg += " (" + detail + ")";
  if (!verifier_log.empty()) msg += "\nverifier log:\n" + verifier_log;
  Napi::Error e = Napi::Error::New(env, msg);
  Napi::Object o = e.Value();
  o.Set("code", ErrnoName(err));
  o.Set("errno", Napi::Number::New(env, -err));
  o.Set("syscall", op);
  if (!verifier_log.empty()) o.Set("verifierLog", verifier_log);
  return e;
}

void ThrowSystemError(Napi::Env env, const std::string &op, int err, const std::string &detail,
                      const std::string &verifier_log) {
  throw SystemError(env, op, err, detail, verifier_log);
}

}  // namespace cgfence
