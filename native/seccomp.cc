// libseccomp operations: syscall name resolution for validating annotations.
#include "seccomp.h"

#include <seccomp.h>

#include <string>

namespace cgfence {

// resolveSyscalls(names: string[], arch?: string) -> (number | null)[]
// arch is a libseccomp architecture name ("x86_64", "aarch64", ...); the native one when
// omitted. null marks a name libseccomp does not know for that architecture.
static Napi::Value ResolveSyscalls(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "resolveSyscalls(names: string[], arch?)");
  uint32_t arch = SCMP_ARCH_NATIVE;
  if (info.Length() > 1 && info[1].IsString()) {
    std::string a = info[1].As<Napi::String>().Utf8Value();
    arch = seccomp_arch_resolve_name(a.c_str());
    if (arch == 0) throw Napi::Error::New(env, "unknown seccomp architecture '" + a + "'");
  }
  Napi::Array names = info[0].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env, names.Length());
  for (uint32_t i = 0; i < names.Length(); i++) {
    std::string n = names.Get(i).ToString().Utf8Value();
    int nr = seccomp_syscall_resolve_name_arch(arch, n.c_str());
    out.Set(i, nr == __NR_SCMP_ERROR ? env.Null() : Napi::Number::New(env, nr));
  }
  return out;
}

void InitSeccomp(Napi::Env env, Napi::Object exports) {
  exports.Set("resolveSyscalls", Napi::Function::New(env, ResolveSyscalls));
}

}  // namespace cgfence
