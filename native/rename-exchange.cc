#include "rename-exchange.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc 2.28)

#include <string>

#include "errors.h"

namespace cgfence {

// True once swapped; false when the kernel or the filesystem cannot exchange (EINVAL), or
// `to` does not exist (ENOENT), so the caller renames instead. Anything else throws.
static Napi::Value RenameExchange(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw Napi::TypeError::New(env, "renameExchange(from: string, to: string)");
  std::string from = info[0].As<Napi::String>().Utf8Value();
  std::string to = info[1].As<Napi::String>().Utf8Value();
  if (renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0)
    return Napi::Boolean::New(env, true);
  if (errno == EINVAL || errno == ENOENT || errno == ENOSYS) return Napi::Boolean::New(env, false);
  ThrowSystemError(env, "renameat2(" + from + ", " + to + ", RENAME_EXCHANGE)", errno);
}

void InitRenameExchange(Napi::Env env, Napi::Object exports) {
  exports.Set("renameExchange", Napi::Function::New(env, RenameExchange, "renameExchange"));
}

}  // namespace cgfence
