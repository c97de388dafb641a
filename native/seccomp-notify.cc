#include "seccomp-notify.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <seccomp.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "errors.h"

namespace cgfence {

struct SeccompNotify::Event {
  enum Kind { kDeny, kNeed, kHolderLost, kHolderConnected } kind;
  std::string key;
  uint32_t pid = 0;
  ExecCall call = ExecCall::kExecve;
  std::string path;
  uint64_t dev = 0, ino = 0;
  int err = 0;
  std::string comm;
  uint64_t ts = 0;
  std::string detail;
  uint64_t count = 0;
  uint32_t reason = 0;                // kDeny: enum cgfence_exec_reason
  int64_t now_sec = 0, want_sec = 0;  // kDeny: the file's stamp now, its entry's (MODIFIED)
  uint32_t now_nsec = 0, want_nsec = 0;
};

struct SeccompNotify::Command {
  enum Kind { kSet, kRemove, kConnectHolder } kind;
  std::string key;
  std::vector<std::pair<Identity, AllowStamp>> allow;
  int deny_errno = 0;
  std::string path;
};

namespace {

enum Tag : uint64_t { kWake = 1, kNotify, kHolder };
constexpr size_t kMaxBatch = 65536;        // events waiting for JS; beyond it they are counted, not kept

uint64_t TagOf(Tag t, int fd) { return (static_cast<uint64_t>(t) << 32) | static_cast<uint32_t>(fd); }

uint64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

bool IsNotifyFd(int fd) {
  char link[64], target[64];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  if (n < 0) return false;
  target[n] = '\0';
  return strcmp(target, "anon_inode:seccomp notify") == 0;
}

std::string ErrnoText(int e) { return strerror(e); }

}  // namespace

Napi::Function SeccompNotify::Init(Napi::Env env) {
  return DefineClass(env, "SeccompNotify",
                     {
                         InstanceMethod("setContainer", &SeccompNotify::SetContainer),
                         InstanceMethod("removeContainer", &SeccompNotify::RemoveContainer),
                         InstanceMethod("connectHolder", &SeccompNotify::ConnectHolder),
                         InstanceMethod("stats", &SeccompNotify::Stats),
                         InstanceMethod("close", &SeccompNotify::Close),
                         InstanceMethod("ref", &SeccompNotify::Ref),
                         InstanceMethod("unref", &SeccompNotify::Unref),
                     });
}

// new SeccompNotify({ holderPath }, onBatch: (events: object[]) => void)
SeccompNotify::SeccompNotify(const Napi::CallbackInfo &info) : Napi::ObjectWrap<SeccompNotify>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
    throw Napi::TypeError::New(env, "SeccompNotify({ holderPath }, onBatch)");
  Napi::Object opts = info[0].As<Napi::Object>();
  if (!opts.Get("holderPath").IsString()) throw Napi::TypeError::New(env, "SeccompNotify: holderPath must be a string");
  holder_path_ = opts.Get("holderPath").As<Napi::String>().Utf8Value();

  // The kernel's structs may grow; RECV wants a zeroed buffer of the kernel's size.
  seccomp_notif_sizes sizes{};
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes))
    ThrowSystemError(env, "seccomp(SECCOMP_GET_NOTIF_SIZES)", errno, "seccomp user notification");
  notif_size_ = std::max<uint16_t>(sizes.seccomp_notif, sizeof(seccomp_notif));
  resp_size_ = std::max<uint16_t>(sizes.seccomp_notif_resp, sizeof(seccomp_notif_resp));
  BuildSyscallTable();

  auto fail = [&](const char *op, int e, const std::string &detail) {
    Stop(false);
    ThrowSystemError(env, op, e, detail);
  };
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epfd_ < 0 || wake_ < 0) fail("epoll_create1/eventfd", errno, "");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = TagOf(kWake, wake_);
  epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_, &ev);

  tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "cgfence-seccomp-notify", 0, 1);

  int e = holder_.Connect(holder_path_);
  if (!e) e = TakeOver();
  if (e) fail("connect", e, "the fd-holder at " + holder_path_);
  thread_ = std::thread(&SeccompNotify::Run, this);
}

SeccompNotify::~SeccompNotify() { Stop(false); }

void SeccompNotify::BuildSyscallTable() {
  struct Arch {
    uint32_t token, audit;
    bool compat;
  };
  // x32 reports AUDIT_ARCH_X86_64 with __X32_SYSCALL_BIT in nr, which libseccomp includes.
  const Arch arches[] = {
      {SCMP_ARCH_X86_64, AUDIT_ARCH_X86_64, false}, {SCMP_ARCH_X86, AUDIT_ARCH_I386, true},
      {SCMP_ARCH_X32, AUDIT_ARCH_X86_64, true},     {SCMP_ARCH_AARCH64, AUDIT_ARCH_AARCH64, false},
      {SCMP_ARCH_ARM, AUDIT_ARCH_ARM, true},
  };
  for (const Arch &a : arches) {
    for (auto [name, call] : {std::pair{"execve", ExecCall::kExecve}, std::pair{"execveat", ExecCall::kExecveat}}) {
      int nr = seccomp_syscall_resolve_name_arch(a.token, name);
      if (nr >= 0) syscalls_.push_back(Syscall{a.audit, nr, call, a.compat});
    }
  }
}

// GET: every fd the holder keeps becomes ours (parked until its allow set arrives), and
// a new holder (the old one died) is given copies of what we have. 0 or an errno.
int SeccompNotify::TakeOver() {
  std::vector<HeldFd> held;
  int table_fd = -1;
  int e = holder_.Fetch(&held, &table_fd);
  if (e) {
    for (const HeldFd &h : held) close(h.fd);
    return e;
  }
  UnmapTable();
  if (table_fd >= 0) {
    void *m = mmap(nullptr, FDH_SLOTS * sizeof(fdh_slot), PROT_READ | PROT_WRITE, MAP_SHARED, table_fd, 0);
    if (m != MAP_FAILED) table_ = static_cast<fdh_slot *>(m);
    close(table_fd);
  }
  std::unordered_set<uint64_t> have, theirs;
  for (const auto &[fd, nf] : fds_) have.insert(nf.serial);
  for (const HeldFd &h : held) {
    theirs.insert(h.serial);
    if (have.count(h.serial) || !IsNotifyFd(h.fd)) {
      close(h.fd);
      continue;
    }
    AddNotifyFd(h.key, h.fd, h.pid, h.serial);
    n_fds_adopted_++;
  }
  for (const auto &[fd, nf] : fds_)
    if (!theirs.count(nf.serial)) holder_.Put(nf.serial, nf.pid, nf.key, fd);
  if (!holder_.connected()) return ECONNRESET;
  holder_connected_ = true;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = TagOf(kHolder, holder_.fd());
  epoll_ctl(epfd_, EPOLL_CTL_ADD, holder_.fd(), &ev);
  return 0;
}

void SeccompNotify::UnmapTable() {
  if (table_) munmap(table_, FDH_SLOTS * sizeof(fdh_slot));
  table_ = nullptr;
}

// ---- JS-thread side: commands are queued for the loop thread, which owns all state.

void SeccompNotify::Post(Command *c) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back(c);
  }
  uint64_t one = 1;
  if (write(wake_, &one, sizeof(one)) < 0) { /* already signalled: the counter is non-zero */ }
}

// setContainer(key, entries: Array<[dev: bigint, ino: bigint, ctimeNs: bigint, interpOnly: boolean]>, denyErrno: number)
Napi::Value SeccompNotify::SetContainer(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsNumber())
    throw Napi::TypeError::New(env, "setContainer(key, entries: [dev, ino, ctimeNs, interpOnly][], denyErrno)");
  if (closed_) throw Napi::Error::New(env, "setContainer: the notify loop is closed");
  auto *c = new Command{Command::kSet, info[0].As<Napi::String>().Utf8Value(), {}, info[2].As<Napi::Number>().Int32Value(), ""};
  Napi::Array a = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsArray() || v.As<Napi::Array>().Length() != 4) {
      delete c;
      throw Napi::TypeError::New(env, "setContainer: each entry is [dev: bigint, ino: bigint, ctimeNs: bigint, interpOnly: boolean]");
    }
    Napi::Array e = v.As<Napi::Array>();
    if (!e.Get(0u).IsBigInt() || !e.Get(1u).IsBigInt() || !e.Get(2u).IsBigInt() || !e.Get(3u).IsBoolean()) {
      delete c;
      throw Napi::TypeError::New(env, "setContainer: dev, ino and ctimeNs are bigints, interpOnly a boolean");
    }
    bool l1 = false, l2 = false, l3 = false;
    uint64_t dev = e.Get(0u).As<Napi::BigInt>().Uint64Value(&l1);
    uint64_t ino = e.Get(1u).As<Napi::BigInt>().Uint64Value(&l2);
    int64_t ctime = e.Get(2u).As<Napi::BigInt>().Int64Value(&l3);
    // Floor division, so that a stamp before 1970 splits as the kernel's timespec does.
    int64_t sec = ctime / 1000000000LL, nsec = ctime % 1000000000LL;
    if (nsec < 0) {
      sec -= 1;
      nsec += 1000000000LL;
    }
    c->allow.emplace_back(Identity{dev, ino}, AllowStamp{sec, static_cast<uint32_t>(nsec), e.Get(3u).As<Napi::Boolean>().Value()});
  }
  Post(c);
  return env.Undefined();
}

Napi::Value SeccompNotify::RemoveContainer(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "removeContainer(key)");
  if (closed_) return env.Undefined();
  Post(new Command{Command::kRemove, info[0].As<Napi::String>().Utf8Value(), {}, 0, ""});
  return env.Undefined();
}

Napi::Value SeccompNotify::ConnectHolder(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "connectHolder(path)");
  if (closed_) throw Napi::Error::New(env, "connectHolder: the notify loop is closed");
  Post(new Command{Command::kConnectHolder, "", {}, 0, info[0].As<Napi::String>().Utf8Value()});
  return env.Undefined();
}

Napi::Value SeccompNotify::Stats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  auto n = [&](const char *k, uint64_t v) { o.Set(k, Napi::Number::New(env, static_cast<double>(v))); };
  n("notifications", n_notifications_);
  n("continued", n_continued_);
  n("denied", n_denied_);
  n("unresolved", n_unresolved_);
  n("gone", n_gone_);
  n("unknownSyscall", n_unknown_syscall_);
  n("fdsReceived", n_fds_received_);
  n("fdsAdopted", n_fds_adopted_);
  n("fdsClosed", n_fds_closed_);
  n("rejected", n_rejected_);
  n("eventsDropped", n_events_dropped_);
  o.Set("openFds", Napi::Number::New(env, static_cast<double>(n_open_fds_.load())));
  o.Set("holderConnected", Napi::Boolean::New(env, holder_connected_.load()));
  return o;
}

// close({ release }): with release, the fd-holder lets go of everything and exits.
Napi::Value SeccompNotify::Close(const Napi::CallbackInfo &info) {
  bool release = info.Length() > 0 && info[0].IsObject() && info[0].As<Napi::Object>().Get("release").ToBoolean();
  Stop(release);
  return info.Env().Undefined();
}

Napi::Value SeccompNotify::Ref(const Napi::CallbackInfo &info) {
  if (!closed_) tsfn_.Ref(info.Env());
  return info.Env().Undefined();
}

Napi::Value SeccompNotify::Unref(const Napi::CallbackInfo &info) {
  if (!closed_) tsfn_.Unref(info.Env());
  return info.Env().Undefined();
}

void SeccompNotify::Stop(bool release) {
  if (closed_.exchange(true)) return;
  stop_ = true;
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (write(wake_, &one, sizeof(one)) < 0) { /* the loop is awake anyway */ }
    thread_.join();
  }
  // The thread is gone: its state is ours now.
  for (Command *c : commands_) delete c;
  commands_.clear();
  if (release && holder_.connected()) {
    for (const auto &[fd, nf] : fds_) holder_.Drop(nf.serial);
    holder_.Quit();
  }
  holder_.Disconnect();
  holder_connected_ = false;
  // Without release the holder's copies keep every container's filter answerable.
  for (const auto &[fd, nf] : fds_) close(fd);
  fds_.clear();
  UnmapTable();
  for (Event *e : batch_) delete e;
  batch_.clear();
  if (epfd_ >= 0) close(epfd_);
  if (wake_ >= 0) close(wake_);
  epfd_ = wake_ = -1;
  if (tsfn_) tsfn_.Release();
}

// ---- The loop thread.

void SeccompNotify::Run() {
  // A container whose fds came from the holder waits for its allow set: ask for them.
  Flush();
  epoll_event evs[64];
  while (!stop_) {
    int n = epoll_wait(epfd_, evs, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n && !stop_; i++) {
      const Tag tag = static_cast<Tag>(evs[i].data.u64 >> 32);
      const int fd = static_cast<int>(evs[i].data.u64 & 0xffffffffu);
      switch (tag) {
        case kWake: {
          uint64_t v;
          if (read(wake_, &v, sizeof(v)) < 0) { /* EAGAIN: already drained */ }
          RunCommands();
          break;
        }
        case kNotify:
          if (evs[i].events & EPOLLIN) Handle(fd);
          else if (evs[i].events & (EPOLLHUP | EPOLLERR)) RemoveNotifyFd(fd, true);
          break;
        case kHolder:
          if (holder_.connected() && fd == holder_.fd()) ReadHolder();
          break;
      }
    }
    Flush();
  }
}

void SeccompNotify::RunCommands() {
  std::vector<Command *> cmds;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cmds.swap(commands_);
  }
  for (Command *c : cmds) {
    switch (c->kind) {
      case Command::kSet: {
        Container &ct = containers_[c->key];
        ct.known = true;
        ct.need_sent = false;
        ct.deny_errno = c->deny_errno;
        ct.allow.clear();
        ct.allow.insert(c->allow.begin(), c->allow.end());
        for (int fd : ct.fds)
          if (!fds_[fd].active) Activate(fd);
        break;
      }
      case Command::kRemove: {
        auto it = containers_.find(c->key);
        if (it == containers_.end()) break;
        std::vector<int> fds = it->second.fds;
        for (int fd : fds) RemoveNotifyFd(fd, true);
        containers_.erase(c->key);
        break;
      }
      case Command::kConnectHolder: {
        if (holder_.connected()) {
          epoll_ctl(epfd_, EPOLL_CTL_DEL, holder_.fd(), nullptr);
          holder_.Disconnect();
        }
        holder_path_ = c->path;
        int e = holder_.Connect(holder_path_);
        if (!e) e = TakeOver();
        holder_connected_ = holder_.connected();
        if (!e)
          Emit(new Event{Event::kHolderConnected, "", 0, ExecCall::kExecve, "", 0, 0, 0, "", MonoNs(), holder_path_,
                         static_cast<uint64_t>(fds_.size())});
        else
          HolderLost("cannot take over from the fd-holder at " + holder_path_ + ": " + ErrnoText(e));
        break;
      }
    }
    delete c;
  }
}

void SeccompNotify::HolderLost(const std::string &why) {
  if (holder_.connected()) epoll_ctl(epfd_, EPOLL_CTL_DEL, holder_.fd(), nullptr);
  holder_.Disconnect();
  holder_connected_ = false;
  Emit(new Event{Event::kHolderLost, "", 0, ExecCall::kExecve, "", 0, 0, 0, "", MonoNs(), why, 0});
}

// The fds runc delivered to the holder since the last wake-up.
void SeccompNotify::ReadHolder() {
  for (;;) {
    HeldFd h;
    int e = holder_.ReceiveNew(&h);
    if (e == EAGAIN) return;
    if (e) {
      HolderLost("the fd-holder closed its socket (" + ErrnoText(e) + ")");
      return;
    }
    if (!IsNotifyFd(h.fd)) {
      close(h.fd);
      n_rejected_++;
      continue;
    }
    AddNotifyFd(h.key, h.fd, h.pid, h.serial);
    n_fds_received_++;
  }
}

void SeccompNotify::AddNotifyFd(const std::string &key, int fd, int pid, uint64_t serial) {
  fds_[fd] = NotifyFd{key, serial, pid, false};
  n_open_fds_++;
  Container &c = containers_[key];
  c.fds.push_back(fd);
  // Parked until the allow set arrives, but in the epoll set from the start: with no
  // events asked for, it still reports EPOLLHUP when the container dies first.
  epoll_event ev{};
  ev.events = 0;
  ev.data.u64 = TagOf(kNotify, fd);
  epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  if (c.known) {
    Activate(fd);
  } else if (!c.need_sent) {
    c.need_sent = true;
    Emit(new Event{Event::kNeed, key, static_cast<uint32_t>(pid), ExecCall::kExecve, "", 0, 0, 0, "", MonoNs(), "", 0});
  }
}

void SeccompNotify::Activate(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = TagOf(kNotify, fd);
  if (epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev) == 0) fds_[fd].active = true;
}

void SeccompNotify::RemoveNotifyFd(int fd, bool drop_from_holder) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  auto ct = containers_.find(it->second.key);
  if (ct != containers_.end()) {
    auto &v = ct->second.fds;
    v.erase(std::remove(v.begin(), v.end(), fd), v.end());
  }
  if (drop_from_holder && holder_.connected() && holder_.Drop(it->second.serial)) HolderLost("the fd-holder is gone");
  fds_.erase(it);
  // Closed at once: the epoll set no longer has it, and every later event in this round
  // is looked up in fds_ first and checked for a pending notification before RECV.
  close(fd);
  n_open_fds_--;
  n_fds_closed_++;
}

void SeccompNotify::Handle(int fd) {
  auto it = fds_.find(fd);
  if (it == fds_.end() || !it->second.active) return;
  // RECV blocks when nothing is pending; level-triggered epoll said something is, but a
  // caller killed since then takes its notification with it.
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN)) {
    if (p.revents & (POLLHUP | POLLERR)) RemoveNotifyFd(fd, true);
    return;
  }
  std::vector<uint8_t> req_buf(notif_size_, 0), resp_buf(resp_size_, 0);
  auto *req = reinterpret_cast<seccomp_notif *>(req_buf.data());
  auto *resp = reinterpret_cast<seccomp_notif_resp *>(resp_buf.data());
  if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, req) < 0) {
    if (errno == ENOENT) n_gone_++;
    return;
  }
  n_notifications_++;
  if (table_) {
    // Serial first: if we die between the two stores, the holder probes from an older id of
    // this same fd, which still covers this one.
    fdh_slot &slot = table_[it->second.serial % FDH_SLOTS];
    __atomic_store_n(&slot.serial, it->second.serial, __ATOMIC_RELEASE);
    __atomic_store_n(&slot.id, req->id, __ATOMIC_RELEASE);
  }
  const Container &ct = containers_[it->second.key];
  auto still_valid = [&]() { return ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) == 0; };

  const Syscall *sc = nullptr;
  for (const Syscall &s : syscalls_)
    if (s.arch == req->data.arch && s.nr == req->data.nr) sc = &s;

  bool deny = false;
  ExecTarget t;
  const AllowStamp *entry = nullptr;
  uint32_t reason = 0;
  if (!sc) {
    n_unknown_syscall_++;  // the filter only notifies exec syscalls; anything else runs as if unfiltered
  } else if (ct.deny_errno == 0) {
    // A pass-through container (TS found no allow set for it): the kernel fence decides.
  } else {
    ExecRequest er{sc->call, req->pid, {}, sc->compat};
    for (int i = 0; i < 6; i++) er.args[i] = req->data.args[i];
    t = ResolveExecTarget(er, still_valid);
    if (t.status == ExecTarget::kGone) {
      n_gone_++;
      return;
    }
    if (t.status == ExecTarget::kUnresolved) n_unresolved_++;
    // Unresolved is not denied: the kernel fails it the same way, or if the file appeared
    // meanwhile, the exec fence (sched_process_exec) still decides on what really runs.
    if (t.status == ExecTarget::kResolved) {
      auto a = ct.allow.find(Identity{t.dev, t.ino});
      entry = a == ct.allow.end() ? nullptr : &a->second;
      reason = JudgeTarget(t, entry);
      deny = reason != 0;
    }
  }
  std::string comm;
  if (deny) {
    comm = ReadComm(req->pid);
    if (!still_valid()) {
      n_gone_++;
      return;
    }
  }
  resp->id = req->id;
  resp->val = 0;
  if (deny) {
    resp->error = -ct.deny_errno;
    resp->flags = 0;
  } else {
    resp->error = 0;
    resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  }
  if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, resp) < 0) {
    if (errno == ENOENT) n_gone_++;
    return;
  }
  if (!deny) {
    n_continued_++;
    return;
  }
  n_denied_++;
  auto *ev = new Event{Event::kDeny, it->second.key, req->pid, sc->call, t.path, t.dev, t.ino, ct.deny_errno, comm, MonoNs(), "", 0};
  ev->reason = reason;
  ev->now_sec = t.ctime_sec;
  ev->now_nsec = t.ctime_nsec;
  if (entry) {
    ev->want_sec = entry->ctime_sec;
    ev->want_nsec = entry->ctime_nsec;
  }
  Emit(ev);
}

void SeccompNotify::Emit(Event *e) {
  if (batch_.size() >= kMaxBatch) {
    n_events_dropped_++;
    delete e;
    return;
  }
  batch_.push_back(e);
}

void SeccompNotify::Flush() {
  if (batch_.empty()) return;
  auto *b = new std::vector<Event *>(std::move(batch_));
  batch_.clear();
  napi_status st = tsfn_.NonBlockingCall(b, [](Napi::Env env, Napi::Function cb, std::vector<Event *> *events) {
    Napi::Array arr = Napi::Array::New(env, events->size());
    uint32_t i = 0;
    for (Event *e : *events) {
      Napi::Object o = Napi::Object::New(env);
      static const char *kinds[] = {"deny", "need", "holder-lost", "holder-connected"};
      o.Set("kind", kinds[e->kind]);
      o.Set("key", e->key);
      o.Set("tsMonoNs", Napi::BigInt::New(env, e->ts));
      if (e->kind == Event::kDeny) {
        o.Set("pid", Napi::Number::New(env, e->pid));
        o.Set("syscall", e->call == ExecCall::kExecve ? "execve" : "execveat");
        o.Set("path", e->path);
        o.Set("dev", Napi::BigInt::New(env, e->dev));
        o.Set("ino", Napi::BigInt::New(env, e->ino));
        o.Set("errno", Napi::Number::New(env, e->err));
        o.Set("comm", e->comm);
        // The exact bytes too: a name need not be UTF-8 (src/audit/exact-name.ts).
        o.Set("pathBytes", Napi::Buffer<char>::Copy(env, e->path.data(), e->path.size()));
        o.Set("commBytes", Napi::Buffer<char>::Copy(env, e->comm.data(), e->comm.size()));
        o.Set("reason", Napi::Number::New(env, e->reason));
        o.Set("nowCtimeNs", Napi::BigInt::New(env, static_cast<int64_t>(e->now_sec * 1000000000LL + e->now_nsec)));
        if (e->reason == 2 /* CGFENCE_REASON_MODIFIED */)
          o.Set("wantCtimeNs", Napi::BigInt::New(env, static_cast<int64_t>(e->want_sec * 1000000000LL + e->want_nsec)));
        else
          o.Set("wantCtimeNs", env.Null());
      } else if (e->kind == Event::kNeed) {
        o.Set("pid", Napi::Number::New(env, e->pid));
      } else {
        o.Set("detail", e->detail);
        o.Set("count", Napi::Number::New(env, static_cast<double>(e->count)));
      }
      arr.Set(i++, o);
      delete e;
    }
    delete events;
    cb.Call({arr});
  });
  if (st != napi_ok) {
    n_events_dropped_ += b->size();
    for (Event *e : *b) delete e;
    delete b;
  }
}

}  // namespace cgfence
