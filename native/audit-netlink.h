// AuditNetlink: the kernel's seccomp log records (AUDIT_SECCOMP, type 1326), read from the
// audit subsystem's read-only multicast group (AUDIT_NLGRP_READLOG, CAP_AUDIT_READ). This
// is where SCMP_ACT_LOG, and SCMP_ACT_ERRNO of a filter loaded with SECCOMP_FILTER_FLAG_LOG,
// end up on a kernel without kprobes; it works with or without auditd, and any number of
// readers each get every record. One native thread receives, and reads the caller's cgroup
// (/proc/<pid>/cgroup) at once, while the caller most likely still exists, and keeps the
// records until TypeScript takes them: when told there are some, or at once with take() (a
// container's detach takes what was received before it writes the detach record). TypeScript
// parses and attributes them (src/kernel/seccomp-audit.ts).
#pragma once
#include <napi.h>

#include <atomic>
#include <mutex>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

namespace cgfence {

class AuditNetlink : public Napi::ObjectWrap<AuditNetlink> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit AuditNetlink(const Napi::CallbackInfo &info);
  ~AuditNetlink() override;

  struct Record {
    std::string text;    // the record as the kernel formatted it, "audit(...): key=value ..."
    std::string cgroup;  // the caller's cgroup v2 path ("0::" line), "" when it was gone
    uint64_t ts;         // CLOCK_MONOTONIC when received
  };

 private:
  Napi::Value Take(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value Unref(const Napi::CallbackInfo &info);
  void Run();
  void Stop();

  int sock_ = -1;
  int wake_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> closed_{false};
  Napi::ThreadSafeFunction tsfn_;
  std::mutex mu_;
  std::vector<Record> pending_;  // received, not taken yet (bounded: kMaxPending)
  std::atomic<uint64_t> received_{0};
  std::atomic<uint64_t> overruns_{0};  // ENOBUFS: the socket buffer overflowed, records lost
  std::atomic<uint64_t> dropped_{0};   // could not be handed to JavaScript
};

}  // namespace cgfence
