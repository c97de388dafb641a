// BpfObject: one loaded BPF object (maps + programs) from the embedded set, with the map and
// attach operations the TypeScript layer builds policy from. Thin on purpose: keys and
// values are Buffers laid out per bpf/include/cgfence-abi.h; meaning lives in TypeScript.
#pragma once
#include <napi.h>
#include <bpf/libbpf.h>
#include <string>

namespace cgfence {

class BpfObject : public Napi::ObjectWrap<BpfObject> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit BpfObject(const Napi::CallbackInfo &info);
  ~BpfObject() override;

  struct bpf_map *FindMap(Napi::Env env, const Napi::Value &name);

 private:
  Napi::Value MapUpdate(const Napi::CallbackInfo &info);
  Napi::Value MapLookup(const Napi::CallbackInfo &info);
  Napi::Value MapDelete(const Napi::CallbackInfo &info);
  Napi::Value MapKeys(const Napi::CallbackInfo &info);
  Napi::Value MapInfo(const Napi::CallbackInfo &info);
  Napi::Value ProgramInfo(const Napi::CallbackInfo &info);
  Napi::Value AttachTracing(const Napi::CallbackInfo &info);
  Napi::Value AttachCgroup(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);

  struct bpf_program *FindProgram(Napi::Env env, const Napi::Value &name);
  void CloseObject(bool unpin);

  struct bpf_object *obj_ = nullptr;
  std::string name_;
};

}  // namespace cgfence
