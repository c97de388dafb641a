// RingBuffer: drains a BPF ring buffer on a native thread and hands the records to
// JavaScript in batches through a ThreadSafeFunction: no polling loop in JavaScript, one
// JS call per wake-up however many events arrived.
#pragma once
#include <napi.h>
#include <bpf/libbpf.h>

#include <atomic>
#include <thread>
#include <vector>

namespace cgfence {

class RingBuffer : public Napi::ObjectWrap<RingBuffer> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit RingBuffer(const Napi::CallbackInfo &info);
  ~RingBuffer() override;

 private:
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value Ref(const Napi::CallbackInfo &info);
  Napi::Value Unref(const Napi::CallbackInfo &info);
  void Run();
  void Stop();
  static int OnSample(void *ctx, void *data, size_t size);

  struct ring_buffer *rb_ = nullptr;
  int map_fd_ = -1;
  Napi::ThreadSafeFunction tsfn_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::vector<std::vector<uint8_t>> *batch_ = nullptr;  // touched by the poll thread only
};

}  // namespace cgfence
