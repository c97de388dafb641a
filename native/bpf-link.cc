#include "bpf-link.h"

#include <bpf/bpf.h>

#include <cerrno>
#include <string>

#include "errors.h"

namespace cgfence {

static Napi::FunctionReference *g_link_ctor = nullptr;

Napi::Function BpfLink::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "BpfLink",
                                 {
                                     StaticMethod("open", &BpfLink::Open),
                                     InstanceMethod("pin", &BpfLink::Pin),
                                     InstanceMethod("unpin", &BpfLink::Unpin),
                                     InstanceMethod("destroy", &BpfLink::Destroy),
                                     InstanceMethod("info", &BpfLink::Info),
                                 });
  g_link_ctor = new Napi::FunctionReference(Napi::Persistent(f));
  env.SetInstanceData(g_link_ctor);
  return f;
}

// Constructed only from native code: new BpfLink(External<bpf_link>).
BpfLink::BpfLink(const Napi::CallbackInfo &info) : Napi::ObjectWrap<BpfLink>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "BpfLink is created by attach*() or BpfLink.open()");
  link_ = info[0].As<Napi::External<struct bpf_link>>().Data();
}

BpfLink::~BpfLink() {
  // Closing the fd detaches an unpinned link; a pinned one stays attached through its pin.
  // The TypeScript layer holds every link it owns, so this runs only for dropped ones.
  if (link_) bpf_link__destroy(link_);
}

Napi::Object BpfLink::Wrap(Napi::Env env, struct bpf_link *link) {
  return g_link_ctor->New({Napi::External<struct bpf_link>::New(env, link)});
}

// BpfLink.open(pinPath) adopts a link pinned by an earlier daemon.
Napi::Value BpfLink::Open(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "pin path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  struct bpf_link *link = bpf_link__open(path.c_str());
  if (!link) ThrowSystemError(env, "bpf_link__open", errno, path);
  return Wrap(env, link);
}

Napi::Value BpfLink::Pin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!link_) throw Napi::Error::New(env, "link is destroyed");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int err = bpf_link__pin(link_, path.c_str());
  if (err) ThrowSystemError(env, "bpf_link__pin", err, path);
  return env.Undefined();
}

Napi::Value BpfLink::Unpin(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (link_ && bpf_link__pin_path(link_)) {
    int err = bpf_link__unpin(link_);
    if (err && err != -ENOENT) ThrowSystemError(env, "bpf_link__unpin", err);
  }
  return env.Undefined();
}

// destroy() detaches the program (unless the link is still pinned somewhere) and closes
// the fd. Idempotent.
Napi::Value BpfLink::Destroy(const Napi::CallbackInfo &info) {
  if (link_) {
    bpf_link__destroy(link_);
    link_ = nullptr;
  }
  return info.Env().Undefined();
}

Napi::Value BpfLink::Info(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  if (!link_) return env.Null();
  struct bpf_link_info li = {};
  uint32_t len = sizeof(li);
  if (bpf_obj_get_info_by_fd(bpf_link__fd(link_), &li, &len)) ThrowSystemError(env, "bpf_obj_get_info_by_fd", errno);
  o.Set("id", li.id);
  o.Set("progId", li.prog_id);
  o.Set("fd", bpf_link__fd(link_));
  const char *pin = bpf_link__pin_path(link_);
  if (pin) o.Set("pinPath", pin);
  return o;
}

}  // namespace cgfence
