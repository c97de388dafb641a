#include "ring-buffer.h"

#include <unistd.h>

#include <cerrno>

#include "bpf-object.h"
#include "errors.h"

namespace cgfence {

using Batch = std::vector<std::vector<uint8_t>>;

// Bound the wait so that close() returns promptly; the kernel wakes us as soon as data
// arrives, so this is not a polling interval.
static constexpr int kPollTimeoutMs = 100;
static constexpr size_t kMaxBatch = 4096;

Napi::Function RingBuffer::Init(Napi::Env env) {
  return DefineClass(env, "RingBuffer",
                     {
                         InstanceMethod("close", &RingBuffer::Close),
                         InstanceMethod("ref", &RingBuffer::Ref),
                         InstanceMethod("unref", &RingBuffer::Unref),
                     });
}

// new RingBuffer(bpfObject, mapName, onBatch: (records: Buffer[]) => void)
RingBuffer::RingBuffer(const Napi::CallbackInfo &info) : Napi::ObjectWrap<RingBuffer>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[2].IsFunction())
    throw Napi::TypeError::New(env, "RingBuffer(bpfObject, mapName, onBatch)");
  BpfObject *obj = Napi::ObjectWrap<BpfObject>::Unwrap(info[0].As<Napi::Object>());
  struct bpf_map *map = obj->FindMap(env, info[1]);
  // Our own fd: the ring stays valid even if the object is closed first.
  map_fd_ = dup(bpf_map__fd(map));
  if (map_fd_ < 0) ThrowSystemError(env, "dup", errno, bpf_map__name(map));
  rb_ = ring_buffer__new(map_fd_, &RingBuffer::OnSample, this, nullptr);
  if (!rb_) {
    int err = errno;
    close(map_fd_);
    ThrowSystemError(env, "ring_buffer__new", err, bpf_map__name(map));
  }
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "cgfence-ringbuf",
                                        0 /* unbounded: the poll thread never blocks, so close()
                                             on the JS thread cannot deadlock with it */
                                        ,
                                        1);
  thread_ = std::thread(&RingBuffer::Run, this);
}

RingBuffer::~RingBuffer() { Stop(); }

int RingBuffer::OnSample(void *ctx, void *data, size_t size) {
  auto *self = static_cast<RingBuffer *>(ctx);
  const uint8_t *p = static_cast<const uint8_t *>(data);
  self->batch_->emplace_back(p, p + size);
  // Returning non-zero ends this poll round early so that one JS call never gets an
  // unbounded batch; the rest is read on the next round.
  return self->batch_->size() >= kMaxBatch ? 1 : 0;
}

void RingBuffer::Run() {
  while (!stop_.load()) {
    batch_ = new Batch();
    int n = ring_buffer__poll(rb_, kPollTimeoutMs);
    if (batch_->empty()) {
      delete batch_;
      batch_ = nullptr;
      if (n < 0 && n != -EINTR) break;
      continue;
    }
    Batch *ready = batch_;
    batch_ = nullptr;
    napi_status st = tsfn_.BlockingCall(ready, [](Napi::Env env, Napi::Function cb, Batch *b) {
      Napi::Array arr = Napi::Array::New(env, b->size());
      for (size_t i = 0; i < b->size(); i++)
        arr.Set(i, Napi::Buffer<uint8_t>::Copy(env, (*b)[i].data(), (*b)[i].size()));
      delete b;
      cb.Call({arr});
    });
    if (st != napi_ok) {
      delete ready;
      break;
    }
  }
}

void RingBuffer::Stop() {
  if (stop_.exchange(true)) return;
  if (thread_.joinable()) thread_.join();
  if (rb_) ring_buffer__free(rb_);
  rb_ = nullptr;
  if (map_fd_ >= 0) close(map_fd_);
  map_fd_ = -1;
  tsfn_.Release();
}

Napi::Value RingBuffer::Close(const Napi::CallbackInfo &info) {
  Stop();
  return info.Env().Undefined();
}

Napi::Value RingBuffer::Ref(const Napi::CallbackInfo &info) {
  if (!stop_.load()) tsfn_.Ref(info.Env());
  return info.Env().Undefined();
}

Napi::Value RingBuffer::Unref(const Napi::CallbackInfo &info) {
  if (!stop_.load()) tsfn_.Unref(info.Env());
  return info.Env().Undefined();
}

}  // namespace cgfence
