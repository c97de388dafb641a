// SeccompNotify: the exec decision loop for seccomp user notification. One native thread
// with one epoll set over every container's notify fds: it receives each trapped
// execve/execveat, resolves the file in the caller's own root and cwd (exec-target.h),
// answers the errno TS chose (EACCES) for an identity the container's allow set lacks and
// CONTINUE otherwise. No JavaScript on that path: allow sets are pushed in by TS (set /
// replace / remove per container), and denials go out to TS in batches for the audit log.
//
// The fds come from cgfence-fd-holder (fd-holder/protocol.h), which is runc's seccomp agent
// socket and outlives this process: at start the loop takes over what the holder keeps, then
// receives each new fd runc delivers to it.
#pragma once
#include <napi.h>

#include <atomic>
#include <cstdint>
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
  struct Container {
    bool known = false;  // an allow set was pushed; until then its fds are parked
    bool need_sent = false;
    std::unordered_map<Identity, AllowStamp, IdentityHash> allow;
    int deny_errno = 0;  // 0: answer CONTINUE to everything, the kernel fence alone decides
    std::vector<int> fds;
  };
  struct NotifyFd {
    std::string key;
    uint64_t serial;
    int pid;
    bool active = false;
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
  Napi::Value Stats(const Napi::CallbackInfo &info);
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
  void Handle(int fd);
  void Emit(Event *e);
  void Flush();
  void BuildSyscallTable();
  int TakeOver();
  void UnmapTable();

  int epfd_ = -1;
  int wake_ = -1;      // eventfd: commands and stop
  std::string holder_path_;
  FdHolderClient holder_;
  struct fdh_slot *table_ = nullptr;  // the holder's in-flight table, shared
  uint16_t notif_size_ = 0, resp_size_ = 0;
  std::vector<Syscall> syscalls_;

  // Owned by the loop thread once it runs.
  std::unordered_map<std::string, Container> containers_;
  std::unordered_map<int, NotifyFd> fds_;
  std::vector<Event *> batch_;

  std::mutex mu_;
  std::vector<Command *> commands_;  // guarded by mu_

  Napi::ThreadSafeFunction tsfn_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> release_{false};
  std::atomic<bool> closed_{false};

  std::atomic<uint64_t> n_notifications_{0}, n_continued_{0}, n_denied_{0}, n_unresolved_{0}, n_gone_{0},
      n_unknown_syscall_{0}, n_fds_received_{0}, n_fds_adopted_{0}, n_fds_closed_{0}, n_events_dropped_{0},
      n_rejected_{0};
  std::atomic<int64_t> n_open_fds_{0};
  std::atomic<bool> holder_connected_{false};
};

}  // namespace cgfence
