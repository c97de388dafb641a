// BpfLink: an attached program. Pinning a link keeps the program attached after the daemon
// exits (crash safety); destroy() detaches it.
#pragma once
#include <napi.h>
#include <bpf/libbpf.h>

namespace cgfence {

class BpfLink : public Napi::ObjectWrap<BpfLink> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object Wrap(Napi::Env env, struct bpf_link *link);
  explicit BpfLink(const Napi::CallbackInfo &info);
  ~BpfLink() override;

 private:
  static Napi::Value Open(const Napi::CallbackInfo &info);
  Napi::Value Pin(const Napi::CallbackInfo &info);
  Napi::Value Unpin(const Napi::CallbackInfo &info);
  Napi::Value Destroy(const Napi::CallbackInfo &info);
  Napi::Value Info(const Napi::CallbackInfo &info);

  struct bpf_link *link_ = nullptr;
};

}  // namespace cgfence
