// libseccomp operations: syscall name resolution for validating annotations.
#include "seccomp.h"

#include <seccomp.h>

#include <cstdlib>
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

// syscallNames(numbers: number[], arch?: string) -> (string | null)[]
// The reverse of resolveSyscalls, for turning learned syscall numbers into the names an
// annotation takes. null marks a number libseccomp has no name for on that architecture.
static Napi::Value SyscallNames(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "syscallNames(numbers: number[], arch?)");
  uint32_t arch = SCMP_ARCH_NATIVE;
  if (info.Length() > 1 && info[1].IsString()) {
    std::string a = info[1].As<Napi::String>().Utf8Value();
    arch = seccomp_arch_resolve_name(a.c_str());
    if (arch == 0) throw Napi::Error::New(env, "unknown seccomp architecture '" + a + "'");
  }
  Napi::Array nrs = info[0].As<Napi::Array>();
  Napi::Array out = Napi::Array::New(env, nrs.Length());
  for (uint32_t i = 0; i < nrs.Length(); i++) {
    Napi::Value v = nrs.Get(i);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, "syscallNames: numbers must be numbers");
    // libseccomp returns a malloc'd copy, or NULL for a number it does not know.
    char *name = seccomp_syscall_resolve_num_arch(arch, v.As<Napi::Number>().Int32Value());
    if (name) {
      out.Set(i, Napi::String::New(env, name));
      free(name);
    } else {
      out.Set(i, env.Null());
    }
  }
  return out;
}

void InitSeccomp(Napi::Env env, Napi::Object exports) {
  exports.Set("syscallNames", Napi::Function::New(env, SyscallNames));
  exports.Set("resolveSyscalls", Napi::Function::New(env, ResolveSyscalls));
}

}  // namespace cgfence
