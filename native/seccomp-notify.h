// SeccompNotify: the exec decision loop for seccomp user notification. Each container's
// notify fd gets a thread of its own blocked in SECCOMP_IOCTL_NOTIF_RECV, with the listener's
// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP flag set: the trapped caller hands its CPU straight to
// that thread and gets it back with the answer, instead of two cross-CPU wake-ups through an
// epoll loop. The thread resolves the file in the caller's own root and cwd (exec-target.h),
// answers the errno TS chose (EACCES) for an identity the container's allow set lacks and
// CONTINUE otherwise. No JavaScript on that path: allow sets are pushed in by TS (set /
// replace / remove per container), and denials go out to TS in batches for the audit log.
//
// Every other syscall that reaches the loop is a cgfence seccomp denial (seccomp-deny, or a
// name seccomp-allow leaves out: the profile routes only those and the exec syscalls here,
// seccomp-profile.ts): it is answered EPERM at once by the fd's thread and counted per
// (container, arch, syscall) for TS to take (takeSeccompDenials, or a 'seccomp' batch).
//
// One control thread (epoll) owns everything else: commands from JS, the fd-holder's socket,
// the fds parked until their container's allow set arrives, starting and stopping the
// per-fd threads.
//
// The fds come from cgfence-fd-holder (fd-holder/protocol.h), which is runc's seccomp agent
// socket and outlives this process: at start the loop takes over what the holder keeps, then
// receives each new fd runc delivers to it.
#pragma once
#include <napi.h>

#include <pthread.h>

#include <atomic>
#include <future>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "exec-target.h"
#include "fd-holder-client.h"
#include "fd-holder/protocol.h"

namespace cgfence {

struct Identity {
  uint64_t dev, ino;
  bool operator==(const Identity &o) const { return dev == o.dev && ino == o.ino; }
};
struct IdentityHash {
  size_t operator()(const Identity &i) const { return std::hash<uint64_t>()(i.ino * 1000003ULL ^ i.dev); }
};

class SeccompNotify : public Napi::ObjectWrap<SeccompNotify> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit SeccompNotify(const Napi::CallbackInfo &info);
  ~SeccompNotify() override;

  struct Event;
  struct Command;

 private:
  // A container's verdict state, shared by the control thread (which replaces it) and the
  // fd threads (which read it): every field under mu.
  struct Container {
    std::mutex mu;
    std::unordered_map<Identity, AllowStamp, IdentityHash> allow;
    int deny_errno = 0;  // 0: answer CONTINUE to everything, the kernel fence alone decides
    // Paths (absolute, no symlink on the way) last resolved to an allowed identity. Safe to
    // answer from without resolving again because CONTINUE never has the last word: the
    // kernel fence (tp_btf/sched_process_exec) checks the file actually executed and kills
    // a forbidden one before its first instruction. A stale entry (the file was replaced
    // by rename since) therefore costs the caller an EACCES turned into a SIGKILL, never a
    // bypass. Denials are never cached: every one is resolved again. Cleared on every set.
    std::unordered_set<std::string> allowed_paths;
  };
  // Control-thread bookkeeping per container.
  struct ContainerEntry {
    bool known = false;  // an allow set was pushed; until then its fds are parked
    bool need_sent = false;
    std::shared_ptr<Container> state = std::make_shared<Container>();
    std::vector<int> fds;
  };
  struct Worker;
  struct NotifyFd {
    std::string key;
    uint64_t serial;
    int pid;
    Worker *worker = nullptr;  // running: the fd is out of the epoll set
  };
  struct Syscall {
    uint32_t arch;
    int nr;
    ExecCall call;
    bool compat;
  };

  Napi::Value SetContainer(const Napi::CallbackInfo &info);
  Napi::Value RemoveContainer(const Napi::CallbackInfo &info);
  Napi::Value ConnectHolder(const Napi::CallbackInfo &info);
  Napi::Value RetireHolder(const Napi::CallbackInfo &info);
  Napi::Value Stats(const Napi::CallbackInfo &info);
  Napi::Value Refused(const Napi::CallbackInfo &info);
  Napi::Value TakeSeccompDenials(const Napi::CallbackInfo &info);
  Napi::Value Close(const Napi::CallbackInfo &info);
  Napi::Value Ref(const Napi::CallbackInfo &info);
  Napi::Value Unref(const Napi::CallbackInfo &info);

  void Post(Command *c);
  void Run();
  void Stop(bool release);
  void RunCommands();
  void ReadHolder();
  void HolderLost(const std::string &why);
  void AddNotifyFd(const std::string &key, int fd, int pid, uint64_t serial);
  void Activate(int fd);
  void RemoveNotifyFd(int fd, bool drop_from_holder);
  void StopWorker(NotifyFd &nf);
  static void *WorkerMain(void *arg);
  void Serve(Worker *w);
  void Handle(Worker *w, void *req_buf, void *resp_buf);
  void HandleSeccompDeny(Worker *w, void *req_buf, void *resp_buf);
  void Emit(Event *e);                        // control thread
  void EmitShared(Event *e);                  // fd threads
  void Deliver(std::vector<Event *> *batch);  // any thread: hands a batch to JS
  void Flush();
  void BuildSyscallTable();
  int TakeOver();
  std::string Retire(int timeout_ms);
  void UnmapTable();

  int epfd_ = -1;
  int wake_ = -1;  // eventfd: commands and stop
  std::string holder_path_;
  FdHolderClient holder_;
  struct fdh_slot *table_ = nullptr;  // the holder's in-flight table, shared
  uint16_t notif_size_ = 0, resp_size_ = 0;
  std::vector<Syscall> syscalls_;

  // Owned by the loop thread once it runs.
  std::unordered_map<std::string, ContainerEntry> containers_;
  std::unordered_map<int, NotifyFd> fds_;
  std::vector<Event *> batch_;

  std::mutex mu_;
  std::vector<Command *> commands_;  // guarded by mu_
  // guarded by mu_: fds (with their serial: the number may be reused once closed) whose
  // thread saw the filter orphaned
  std::vector<std::pair<int, uint64_t>> ended_;
  // Denials answered per container, counted when the answer is sent: exact at detach even
  // while their events are still on their way to JavaScript. Dropped with the container.
  std::mutex refused_mu_;
  std::unordered_map<std::string, uint64_t> refused_;  // guarded by refused_mu_

  // Seccomp denials answered (EPERM) and not yet taken by JS, per container key, then per
  // (arch, nr). Counted here rather than sent one event per call: a container looping on a
  // denied syscall costs a counter increment per call and one JS call per batch, and the
  // memory stays bounded by the kinds, not the calls. scheduled: a batch is on its way.
  // Shared with the queued JS calls, which may run after this object is gone.
  struct SeccompDenial {
    uint32_t arch;
    int nr;
    uint64_t count;
    uint32_t pid;
    std::string comm;
    uint64_t first_ns, last_ns;
    bool by_holder;  // answered by the fd-holder while no daemon was connected (counts only)
  };
  struct SeccompDenialCounts {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<SeccompDenial>> by_key;  // guarded by mu
    bool scheduled = false;                                              // guarded by mu
  };
  static Napi::Array SeccompDenialsToJs(Napi::Env env, SeccompDenialCounts &counts);
  std::shared_ptr<SeccompDenialCounts> sdeny_ = std::make_shared<SeccompDenialCounts>();

  Napi::ThreadSafeFunction tsfn_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> release_{false};
  std::atomic<bool> closed_{false};

  std::atomic<uint64_t> n_notifications_{0}, n_continued_{0}, n_denied_{0}, n_unresolved_{0}, n_gone_{0},
      n_fds_received_{0}, n_fds_adopted_{0}, n_fds_closed_{0}, n_events_dropped_{0}, n_rejected_{0},
      n_seccomp_denied_{0};
  std::atomic<uint64_t> n_cache_hits_{0}, n_sync_wakeup_{0}, n_thread_failures_{0};
  std::atomic<int64_t> n_open_fds_{0}, n_threads_{0};
  // The profile of a decision (receive returned .. answer sent), cumulative ns per stage,
  // and a histogram of the whole for percentiles: see docs/exec-performance.md.
  enum Stage { kStTable, kStRead, kStLookup, kStResolve, kStValid, kStSend, kStTotal, kStages };
  std::atomic<uint64_t> stage_ns_[kStages] = {};
  static constexpr int kBuckets = 300;  // 0..100 µs by 1 µs, then by 100 µs up to 20 ms
  std::atomic<uint64_t> hist_[kBuckets] = {};
  std::atomic<bool> holder_connected_{false};
  // The connected holder's protocol version (FDH_VERSION; 0: none connected, or one of before
  // versions, which answers denials CONTINUE while no daemon runs).
  std::atomic<int> holder_version_{0};
};

}  // namespace cgfence
