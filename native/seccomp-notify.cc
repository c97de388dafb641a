#include "seccomp-notify.h"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
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
#include <chrono>
#include <cerrno>
#include <cstring>

#include "errors.h"

namespace cgfence {

struct SeccompNotify::Event {
  // kSeccompReady: denials wait in sdeny_ (counted); the JS side of the delivery takes them.
  enum Kind { kDeny, kNeed, kHolderLost, kHolderConnected, kSeccompReady } kind;
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

struct SeccompNotify::Worker {
  SeccompNotify *self;
  int fd;
  std::string key;
  uint64_t serial;
  std::shared_ptr<Container> ct;
  pthread_t thread{};
  std::atomic<bool> stop{false}, exited{false};
};

struct SeccompNotify::Command {
  enum Kind { kSet, kRemove, kConnectHolder, kRetireHolder } kind;
  std::string key;
  std::vector<std::pair<Identity, AllowStamp>> allow;
  int deny_errno = 0;  // kRetireHolder: how long to wait for the holder to exit, ms
  std::string path;
  // A JS call waiting for the result: "" or why not. Shared, since a caller that gave up
  // waiting (AwaitLoop) is gone when the loop thread answers.
  std::shared_ptr<std::promise<std::string>> done;
};

namespace {

enum Tag : uint64_t { kWake = 1, kNotify, kHolder };
constexpr size_t kMaxBatch = 65536;       // events waiting for JS; beyond it they are counted, not kept
constexpr size_t kMaxCachedPaths = 4096;  // per container; the cache starts over beyond it
constexpr size_t kWorkerStack = 256 * 1024;

// Linux 6.6; older uapi headers lack them. On an older kernel SET_FLAGS fails with EINVAL
// and the loop works as before, with ordinary wake-ups.
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

// Interrupts an fd thread blocked in RECV when it must stop (its container is removed, the
// daemon stops): the handler does nothing, installed without SA_RESTART so that the ioctl
// returns EINTR. Fd threads block every other signal; no other thread ever gets this one.
int StopSignal() { return SIGRTMIN + 5; }
void OnStopSignal(int) {}
void InstallStopSignal() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = OnStopSignal;
    sigemptyset(&sa.sa_mask);
    sigaction(StopSignal(), &sa, nullptr);
  });
}

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

// The loop thread's answer to a command a JS call waits for; bounded, so that a loop thread
// that stopped serving commands cannot hang the daemon.
std::string AwaitLoop(std::future<std::string> &f, int seconds) {
  if (f.wait_for(std::chrono::seconds(seconds)) != std::future_status::ready)
    return "the notify loop did not answer within " + std::to_string(seconds) + " s";
  return f.get();
}

}  // namespace

Napi::Function SeccompNotify::Init(Napi::Env env) {
  return DefineClass(env, "SeccompNotify",
                     {
                         InstanceMethod("setContainer", &SeccompNotify::SetContainer),
                         InstanceMethod("removeContainer", &SeccompNotify::RemoveContainer),
                         InstanceMethod("connectHolder", &SeccompNotify::ConnectHolder),
                         InstanceMethod("retireHolder", &SeccompNotify::RetireHolder),
                         InstanceMethod("stats", &SeccompNotify::Stats),
                         InstanceMethod("refused", &SeccompNotify::Refused),
                         InstanceMethod("takeSeccompDenials", &SeccompNotify::TakeSeccompDenials),
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
  std::vector<HeldDenials> denied;
  int table_fd = -1, version = 0;
  int e = holder_.Fetch(&held, &table_fd, &denied, &version);
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
  // What the holder answered while no daemon was connected: counted for the records.
  if (!denied.empty()) {
    std::unordered_map<uint64_t, std::string> keys;
    for (const HeldFd &h : held) keys[h.serial] = h.key;
    const uint64_t now = MonoNs();
    {
      std::lock_guard<std::mutex> lock(sdeny_->mu);
      for (const HeldDenials &d : denied) {
        auto k = keys.find(d.serial);
        if (k == keys.end() || d.count == 0) continue;
        std::vector<SeccompDenial> &v = sdeny_->by_key[k->second];
        SeccompDenial *x = nullptr;
        for (SeccompDenial &y : v)
          if (y.by_holder && y.arch == d.arch && y.nr == d.nr) x = &y;
        if (!x) {
          v.push_back(SeccompDenial{d.arch, d.nr, 0, 0, "", now, now, true});
          x = &v.back();
        }
        x->count += d.count;
      }
      sdeny_->scheduled = true;
    }
    EmitShared(new Event{Event::kSeccompReady, "", 0, ExecCall::kExecve, "", 0, 0, 0, "", now, "", 0});
  }
  if (!holder_.connected()) return ECONNRESET;
  holder_connected_ = true;
  holder_version_ = version;
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
  if (write(wake_, &one, sizeof(one)) < 0) { /* already signalled: the counter is non-zero */
  }
}

// setContainer(key, entries: Array<[dev: bigint, ino: bigint, ctimeNs: bigint, interpOnly: boolean]>, denyErrno: number)
Napi::Value SeccompNotify::SetContainer(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsNumber())
    throw Napi::TypeError::New(env, "setContainer(key, entries: [dev, ino, ctimeNs, interpOnly][], denyErrno)");
  if (closed_) throw Napi::Error::New(env, "setContainer: the notify loop is closed");
  auto *c = new Command{
      Command::kSet, info[0].As<Napi::String>().Utf8Value(), {}, info[2].As<Napi::Number>().Int32Value(), ""};
  Napi::Array a = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsArray() || v.As<Napi::Array>().Length() != 4) {
      delete c;
      throw Napi::TypeError::New(
          env, "setContainer: each entry is [dev: bigint, ino: bigint, ctimeNs: bigint, interpOnly: boolean]");
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
    c->allow.emplace_back(Identity{dev, ino},
                          AllowStamp{sec, static_cast<uint32_t>(nsec), e.Get(3u).As<Napi::Boolean>().Value()});
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

// connectHolder(path, wait?): takes over from the holder at path on the loop thread. With
// wait, blocks until that is done (a holder answers at once; the client's timeout is 5 s)
// and throws why it failed; the 'holder-connected' or 'holder-lost' event follows either way.
Napi::Value SeccompNotify::ConnectHolder(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "connectHolder(path, wait?)");
  if (closed_) throw Napi::Error::New(env, "connectHolder: the notify loop is closed");
  const bool wait = info.Length() > 1 && info[1].ToBoolean();
  auto *c = new Command{Command::kConnectHolder, "", {}, 0, info[0].As<Napi::String>().Utf8Value()};
  std::future<std::string> f;
  if (wait) {
    c->done = std::make_shared<std::promise<std::string>>();
    f = c->done->get_future();
  }
  Post(c);
  if (wait) {
    std::string why = AwaitLoop(f, 30);
    if (!why.empty()) throw Napi::Error::New(env, why);
  }
  return env.Undefined();
}

// retireHolder(timeoutMs): tells the connected fd-holder to go (QUIT) and waits until it has
// exited; the loop keeps every fd it took over (GET), to hand to a new holder
// (connectHolder). Throws why it could not. Blocks the JS thread for at most timeoutMs: the
// holder's own socket paths must be gone before a new holder listens on them.
Napi::Value SeccompNotify::RetireHolder(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "retireHolder(timeoutMs)");
  if (closed_) throw Napi::Error::New(env, "retireHolder: the notify loop is closed");
  const int timeout_ms = std::max(0, info[0].As<Napi::Number>().Int32Value());
  auto *c = new Command{Command::kRetireHolder, "", {}, timeout_ms, ""};
  c->done = std::make_shared<std::promise<std::string>>();
  std::future<std::string> f = c->done->get_future();
  Post(c);
  std::string why = AwaitLoop(f, timeout_ms / 1000 + 30);
  if (!why.empty()) throw Napi::Error::New(env, why);
  return env.Undefined();
}

// refused(key): execs of the container answered with its errno so far.
Napi::Value SeccompNotify::Refused(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "refused(key)");
  std::lock_guard<std::mutex> lock(refused_mu_);
  auto it = refused_.find(info[0].As<Napi::String>().Utf8Value());
  return Napi::Number::New(env, it == refused_.end() ? 0 : static_cast<double>(it->second));
}

// Everything counted since the last take, as [{ key, arch, nr, count, pid, comm,
// firstMonoNs, lastMonoNs }]; the counts start again from 0. JS thread only.
Napi::Array SeccompNotify::SeccompDenialsToJs(Napi::Env env, SeccompDenialCounts &counts) {
  std::unordered_map<std::string, std::vector<SeccompDenial>> taken;
  {
    std::lock_guard<std::mutex> lock(counts.mu);
    taken.swap(counts.by_key);
    counts.scheduled = false;
  }
  Napi::Array arr = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto &[key, v] : taken) {
    for (const SeccompDenial &d : v) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("kind", "seccomp");
      o.Set("key", key);
      o.Set("arch", Napi::Number::New(env, d.arch));
      o.Set("nr", Napi::Number::New(env, d.nr));
      o.Set("count", Napi::Number::New(env, static_cast<double>(d.count)));
      o.Set("pid", Napi::Number::New(env, d.pid));
      o.Set("comm", d.comm);
      o.Set("firstMonoNs", Napi::BigInt::New(env, d.first_ns));
      o.Set("tsMonoNs", Napi::BigInt::New(env, d.last_ns));
      o.Set("byHolder", Napi::Boolean::New(env, d.by_holder));
      arr.Set(i++, o);
    }
  }
  return arr;
}

// takeSeccompDenials(): what the fd threads counted and JS has not had yet (a container's
// detach takes its last counts this way, before its detach record).
Napi::Value SeccompNotify::TakeSeccompDenials(const Napi::CallbackInfo &info) {
  return SeccompDenialsToJs(info.Env(), *sdeny_);
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
  n("fdsReceived", n_fds_received_);
  n("fdsAdopted", n_fds_adopted_);
  n("fdsClosed", n_fds_closed_);
  n("rejected", n_rejected_);
  n("seccompDenied", n_seccomp_denied_);
  n("eventsDropped", n_events_dropped_);
  n("cacheHits", n_cache_hits_);
  n("syncWakeUp", n_sync_wakeup_);
  n("threadFailures", n_thread_failures_);
  o.Set("openFds", Napi::Number::New(env, static_cast<double>(n_open_fds_.load())));
  o.Set("threads", Napi::Number::New(env, static_cast<double>(n_threads_.load())));
  // Decision time (receive returned .. answer sent), per stage and as percentiles.
  static const char *stages[] = {"table", "read", "lookup", "resolve", "valid", "send", "total"};
  Napi::Object prof = Napi::Object::New(env);
  for (int i = 0; i < kStages; i++)
    prof.Set(stages[i], Napi::Number::New(env, static_cast<double>(stage_ns_[i].load())));
  o.Set("profileNs", prof);
  uint64_t h[kBuckets], total = 0;
  for (int i = 0; i < kBuckets; i++) total += (h[i] = hist_[i].load());
  auto pct = [&](double q) -> double {
    if (!total) return 0;
    uint64_t want = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1, seen = 0;
    for (int i = 0; i < kBuckets; i++) {
      seen += h[i];
      if (seen >= want) return i < 100 ? i + 1 : 100 + (i - 99) * 100.0;  // the bucket's upper bound, µs
    }
    return 20000;
  };
  Napi::Object lat = Napi::Object::New(env);
  lat.Set("count", Napi::Number::New(env, static_cast<double>(total)));
  lat.Set("p50", pct(0.5));
  lat.Set("p90", pct(0.9));
  lat.Set("p99", pct(0.99));
  lat.Set("max", pct(1.0));
  o.Set("decisionUs", lat);
  // Sparse: { "<bucket's upper bound, µs>": count }, for percentiles over a window (bench).
  Napi::Object buckets = Napi::Object::New(env);
  for (int i = 0; i < kBuckets; i++)
    if (h[i])
      buckets.Set(std::to_string(i < 100 ? i + 1 : 100 + (i - 99) * 100),
                  Napi::Number::New(env, static_cast<double>(h[i])));
  o.Set("decisionHistogram", buckets);
  o.Set("holderConnected", Napi::Boolean::New(env, holder_connected_.load()));
  o.Set("holderVersion", Napi::Number::New(env, holder_connected_.load() ? holder_version_.load() : 0));
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
    if (write(wake_, &one, sizeof(one)) < 0) { /* the loop is awake anyway */
    }
    thread_.join();
  }
  // The thread is gone: its state is ours now. The fd threads finish the notification they
  // hold, if any, and stop; what arrives after is the fd-holder's to answer.
  for (auto &[fd, nf] : fds_) StopWorker(nf);
  for (Command *c : commands_) {
    if (c->done) c->done->set_value("the notify loop stopped");
    delete c;
  }
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
          if (read(wake_, &v, sizeof(v)) < 0) { /* EAGAIN: already drained */
          }
          RunCommands();
          break;
        }
        case kNotify:
          // Only parked fds are in the set, and only for EPOLLHUP: the container died first.
          if (evs[i].events & (EPOLLHUP | EPOLLERR)) RemoveNotifyFd(fd, true);
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
  std::vector<std::pair<int, uint64_t>> ended;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cmds.swap(commands_);
    ended.swap(ended_);
  }
  for (auto [fd, serial] : ended) {
    auto it = fds_.find(fd);
    if (it != fds_.end() && it->second.serial == serial) RemoveNotifyFd(fd, true);
  }
  for (Command *c : cmds) {
    switch (c->kind) {
      case Command::kSet: {
        ContainerEntry &ct = containers_[c->key];
        ct.known = true;
        ct.need_sent = false;
        {
          std::lock_guard<std::mutex> lock(ct.state->mu);
          ct.state->deny_errno = c->deny_errno;
          ct.state->allow.clear();
          ct.state->allow.insert(c->allow.begin(), c->allow.end());
          ct.state->allowed_paths.clear();
        }
        for (int fd : ct.fds)
          if (!fds_[fd].worker) Activate(fd);
        break;
      }
      case Command::kRemove: {
        auto it = containers_.find(c->key);
        if (it == containers_.end()) break;
        std::vector<int> fds = it->second.fds;
        for (int fd : fds) RemoveNotifyFd(fd, true);
        containers_.erase(c->key);
        std::lock_guard<std::mutex> lock(refused_mu_);
        refused_.erase(c->key);
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
          // err: the holder's protocol version (0: one that answers denials CONTINUE).
          Emit(new Event{Event::kHolderConnected, "", 0, ExecCall::kExecve, "", 0, 0, holder_version_.load(), "",
                         MonoNs(), holder_path_, static_cast<uint64_t>(fds_.size())});
        else
          HolderLost("cannot take over from the fd-holder at " + holder_path_ + ": " + ErrnoText(e));
        if (c->done)
          c->done->set_value(e ? "cannot take over from the fd-holder at " + holder_path_ + ": " + ErrnoText(e) : "");
        break;
      }
      case Command::kRetireHolder:
        c->done->set_value(Retire(c->deny_errno));
        break;
    }
    delete c;
  }
}

// QUIT to the connected holder, then waits for it to exit: it unlinks its socket paths on
// the way out, so a new holder must not listen on them before. "" or why not.
std::string SeccompNotify::Retire(int timeout_ms) {
  if (!holder_.connected()) return "no fd-holder is connected";
  const int pid = holder_.PeerPid();
  // Taken while it is connected, so the pid is still the holder's.
  const int pidfd = pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
  // Its in-flight rescue at QUIT answers what the table names CONTINUE: nothing of ours must
  // be there, so the fd threads stop first (each finishes the notification it holds) and start
  // again once the holder is gone; meanwhile callers wait.
  std::vector<int> running;
  for (auto &[fd, nf] : fds_)
    if (nf.worker) {
      StopWorker(nf);
      running.push_back(fd);
    }
  if (table_) memset(table_, 0, FDH_SLOTS * sizeof(fdh_slot));
  epoll_ctl(epfd_, EPOLL_CTL_DEL, holder_.fd(), nullptr);
  int e = holder_.Quit();
  holder_.Disconnect();
  holder_connected_ = false;
  holder_version_ = 0;
  if (e) {
    if (pidfd >= 0) close(pidfd);
    for (int fd : running) Activate(fd);
    return "cannot tell the fd-holder to quit: " + ErrnoText(e);
  }
  const uint64_t deadline = MonoNs() + static_cast<uint64_t>(std::max(0, timeout_ms)) * 1000000ULL;
  bool gone = false;
  for (;;) {
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      gone = poll(&p, 1, 10) == 1;
    } else {
      // Not in our pid namespace: its control socket path, unlinked as it exits, says.
      struct stat st;
      gone = lstat(holder_path_.c_str(), &st) != 0 && errno == ENOENT;
      if (!gone) {
        timespec ts{0, 10000000};
        nanosleep(&ts, nullptr);
      }
    }
    if (gone || MonoNs() >= deadline) break;
  }
  if (pidfd >= 0) close(pidfd);
  for (int fd : running) Activate(fd);
  if (!gone)
    return "the fd-holder" + (pid > 0 ? " (pid " + std::to_string(pid) + ")" : std::string()) +
           " did not exit within " + std::to_string(timeout_ms) + " ms of QUIT";
  return "";
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
  fds_[fd] = NotifyFd{key, serial, pid, nullptr};
  n_open_fds_++;
  ContainerEntry &c = containers_[key];
  c.fds.push_back(fd);
  // The caller hands its CPU to the fd's thread and gets it back with the answer (Linux 6.6).
  uint64_t flags = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
  if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags) == 0) n_sync_wakeup_++;
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

// Starts the fd's own thread; the control thread no longer watches it (the thread sees its
// container die as the orphaned filter's ENOENT and says so).
void SeccompNotify::Activate(int fd) {
  NotifyFd &nf = fds_[fd];
  if (nf.worker) return;
  InstallStopSignal();
  auto *w = new Worker{this, fd, nf.key, nf.serial, containers_[nf.key].state};
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kWorkerStack);
  // Every signal blocked from birth; the thread itself unblocks the stop signal only.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int e = pthread_create(&w->thread, &attr, &SeccompNotify::WorkerMain, w);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  if (e) {
    // No thread: the fd stays parked (its execs wait, its death is still seen); the next
    // set for its container retries. Counted in stats().threadFailures.
    delete w;
    n_thread_failures_++;
    return;
  }
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  nf.worker = w;
  n_threads_++;
}

void SeccompNotify::StopWorker(NotifyFd &nf) {
  Worker *w = nf.worker;
  if (!w) return;
  w->stop = true;
  // A signal sent just before the thread enters RECV is lost, hence the repetition.
  while (!w->exited.load()) {
    pthread_kill(w->thread, StopSignal());
    timespec ts{0, 200000};
    nanosleep(&ts, nullptr);
  }
  pthread_join(w->thread, nullptr);
  delete w;
  nf.worker = nullptr;
  n_threads_--;
}

void SeccompNotify::RemoveNotifyFd(int fd, bool drop_from_holder) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  StopWorker(it->second);
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
  auto ct = containers_.find(it->second.key);
  if (ct != containers_.end()) {
    auto &v = ct->second.fds;
    v.erase(std::remove(v.begin(), v.end(), fd), v.end());
  }
  if (drop_from_holder && holder_.connected() && holder_.Drop(it->second.serial)) HolderLost("the fd-holder is gone");
  fds_.erase(it);
  close(fd);
  n_open_fds_--;
  n_fds_closed_++;
}

void *SeccompNotify::WorkerMain(void *arg) {
  auto *w = static_cast<Worker *>(arg);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, StopSignal());
  pthread_sigmask(SIG_UNBLOCK, &stop, nullptr);
  char name[16] = "cgfence-notify";
  pthread_setname_np(pthread_self(), name);
  w->self->Serve(w);
  w->exited = true;
  return nullptr;
}

// Blocked in RECV, which is what SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP wakes directly.
void SeccompNotify::Serve(Worker *w) {
  std::vector<uint8_t> req_buf(notif_size_), resp_buf(resp_size_);
  while (!w->stop.load(std::memory_order_relaxed)) {
    memset(req_buf.data(), 0, req_buf.size());
    if (ioctl(w->fd, SECCOMP_IOCTL_NOTIF_RECV, req_buf.data()) < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOENT) {
        // A caller killed between its wake-up and ours, or no task is left in the filter:
        // POLLHUP tells the second apart.
        pollfd p{w->fd, POLLIN, 0};
        if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP)) break;
        n_gone_++;
        continue;
      }
      break;  // EBADF/EINVAL: nothing this thread can answer any more
    }
    Handle(w, req_buf.data(), resp_buf.data());
  }
  if (w->stop.load()) return;
  // The container is gone: the control thread closes the fd and tells the holder.
  {
    std::lock_guard<std::mutex> lock(mu_);
    ended_.emplace_back(w->fd, w->serial);
  }
  uint64_t one = 1;
  if (write(wake_, &one, sizeof(one)) < 0) { /* already signalled */
  }
}

void SeccompNotify::Handle(Worker *w, void *req_buf, void *resp_buf) {
  auto *req = static_cast<seccomp_notif *>(req_buf);
  auto *resp = static_cast<seccomp_notif_resp *>(resp_buf);
  const uint64_t t0 = MonoNs();
  uint64_t tprev = t0;
  auto stage = [&](Stage s) {
    uint64_t now = MonoNs();
    stage_ns_[s].fetch_add(now - tprev, std::memory_order_relaxed);
    tprev = now;
  };
  n_notifications_++;
  const Syscall *sc = nullptr;
  for (const Syscall &s : syscalls_)
    if (s.arch == req->data.arch && s.nr == req->data.nr) sc = &s;
  if (table_) {
    // Serial first: if we die between the two stores, the holder probes from an older id of
    // this same fd, which still covers this one. FDH_SLOT_DENY tells the holder this one is
    // a seccomp denial (EPERM), not an exec (CONTINUE): protocol.h.
    fdh_slot &slot = table_[w->serial % FDH_SLOTS];
    __atomic_store_n(&slot.serial, w->serial | (sc ? 0 : FDH_SLOT_DENY), __ATOMIC_RELEASE);
    __atomic_store_n(&slot.id, req->id, __ATOMIC_RELEASE);
  }
  stage(kStTable);
  if (!sc) {
    HandleSeccompDeny(w, req_buf, resp_buf);
    return;
  }
  const int fd = w->fd;
  auto still_valid = [&]() { return ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) == 0; };

  Container &ct = *w->ct;
  int deny_errno;
  {
    std::lock_guard<std::mutex> lock(ct.mu);
    deny_errno = ct.deny_errno;
  }
  bool deny = false;
  ExecTarget t;
  // A copy of the target's allow entry: the set may be replaced once the lock is let go.
  AllowStamp want{};
  bool have_entry = false;
  uint32_t reason = 0;
  if (deny_errno == 0) {
    // A pass-through container (TS found no allow set for it): the kernel fence decides.
  } else {
    ExecRequest er{sc->call, req->pid, {}, sc->compat};
    for (int i = 0; i < 6; i++) er.args[i] = req->data.args[i];
    std::string path;
    int e = ReadExecPath(er, &path);
    stage(kStRead);
    const bool at = sc->call == ExecCall::kExecveat;
    // Only an absolute path, resolved the same whatever the caller's cwd or dirfd.
    const bool cacheable =
        !e && !path.empty() && path[0] == '/' && !(at && (static_cast<int>(er.args[4]) & AT_SYMLINK_NOFOLLOW));
    bool hit = false;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(ct.mu);
      hit = ct.allowed_paths.count(path) > 0;
    }
    stage(kStLookup);
    if (hit) {
      n_cache_hits_++;
    } else if (e) {
      // Unreadable: the kernel fails it the same way (EFAULT), or the fence decides.
      if (!still_valid()) {
        n_gone_++;
        return;
      }
      n_unresolved_++;
    } else {
      t = ResolveExecPath(er, path, still_valid);
      stage(kStResolve);
      if (t.status == ExecTarget::kGone) {
        n_gone_++;
        return;
      }
      if (t.status == ExecTarget::kUnresolved) n_unresolved_++;
      // Unresolved is not denied: the kernel fails it the same way, or if the file appeared
      // meanwhile, the exec fence (sched_process_exec) still decides on what really runs.
      if (t.status == ExecTarget::kResolved) {
        std::lock_guard<std::mutex> lock(ct.mu);
        auto a = ct.allow.find(Identity{t.dev, t.ino});
        have_entry = a != ct.allow.end();
        if (have_entry) want = a->second;
        reason = JudgeTarget(t, have_entry ? &want : nullptr);
        deny = reason != 0;
        // Only a path whose file is allowed and unchanged is cached: a later write to it
        // moves its stamp, and the kernel fence then kills it (a stale hit costs an errno).
        if (!deny && cacheable && PathHasNoSymlink(er.pid, path)) {
          if (ct.allowed_paths.size() >= kMaxCachedPaths) ct.allowed_paths.clear();
          ct.allowed_paths.insert(path);
        }
      }
      stage(kStLookup);
    }
  }
  std::string comm;
  if (deny) {
    comm = ReadComm(req->pid);
    if (!still_valid()) {
      n_gone_++;
      return;
    }
    stage(kStValid);
  }
  memset(resp, 0, resp_size_);
  resp->id = req->id;
  resp->val = 0;
  if (deny) {
    resp->error = -deny_errno;
    resp->flags = 0;
  } else {
    resp->error = 0;
    resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  }
  int sent = ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, resp);
  stage(kStSend);
  const uint64_t total = tprev - t0;
  stage_ns_[kStTotal].fetch_add(total, std::memory_order_relaxed);
  const uint64_t us = total / 1000;
  hist_[us < 100 ? us : std::min<uint64_t>(kBuckets - 1, 99 + (us - 100) / 100 + 1)].fetch_add(
      1, std::memory_order_relaxed);
  if (sent < 0) {
    if (errno == ENOENT) n_gone_++;
    return;
  }
  if (!deny) {
    n_continued_++;
    return;
  }
  n_denied_++;
  {
    std::lock_guard<std::mutex> lock(refused_mu_);
    refused_[w->key]++;
  }
  auto *ev =
      new Event{Event::kDeny, w->key, req->pid, sc->call, t.path, t.dev, t.ino, deny_errno, comm, MonoNs(), "", 0};
  ev->reason = reason;
  ev->now_sec = t.ctime_sec;
  ev->now_nsec = t.ctime_nsec;
  if (have_entry) {
    ev->want_sec = want.ctime_sec;
    ev->want_nsec = want.ctime_nsec;
  }
  EmitShared(ev);
}

// A syscall the filter notifies that is not an exec is one cgfence's seccomp rules deny: the
// profile (seccomp-profile.ts) sends nothing else here. Answered EPERM on this thread, at
// once, with no JavaScript before the answer: a container looping on a denied syscall must
// neither wait on the JS event loop nor stall it (nor, through it, other containers' execs
// and the audit log). The denial is counted per (container, arch, syscall); JS takes the
// counts in batches ('seccomp' events) and at the container's detach.
void SeccompNotify::HandleSeccompDeny(Worker *w, void *req_buf, void *resp_buf) {
  auto *req = static_cast<seccomp_notif *>(req_buf);
  auto *resp = static_cast<seccomp_notif_resp *>(resp_buf);
  memset(resp, 0, resp_size_);
  resp->id = req->id;
  resp->error = -EPERM;
  auto find = [&](std::vector<SeccompDenial> &v) -> SeccompDenial * {
    for (SeccompDenial &x : v)
      if (!x.by_holder && x.arch == req->data.arch && x.nr == req->data.nr) return &x;
    return nullptr;
  };
  // The first of its kind in this batch names the batch's record: its comm is read while the
  // caller still waits for the answer (after it, a short-lived caller may already be gone).
  bool first;
  {
    std::lock_guard<std::mutex> lock(sdeny_->mu);
    first = find(sdeny_->by_key[w->key]) == nullptr;
  }
  std::string comm = first ? ReadComm(req->pid) : std::string();
  if (ioctl(w->fd, SECCOMP_IOCTL_NOTIF_SEND, resp) < 0) {
    if (errno == ENOENT) n_gone_++;  // the caller was killed meanwhile: nothing was denied
    return;
  }
  n_seccomp_denied_++;
  const uint64_t now = MonoNs();
  bool schedule = false;
  {
    std::lock_guard<std::mutex> lock(sdeny_->mu);
    std::vector<SeccompDenial> &v = sdeny_->by_key[w->key];
    SeccompDenial *d = find(v);
    if (!d) {
      // Taken by JavaScript since the check above: read now, as well as can be.
      if (comm.empty()) comm = ReadComm(req->pid);
      v.push_back(SeccompDenial{req->data.arch, req->data.nr, 0, req->pid, comm, now, now, false});
      d = &v.back();
    }
    d->count++;
    d->pid = req->pid;
    d->last_ns = now;
    if (!sdeny_->scheduled) schedule = sdeny_->scheduled = true;
  }
  if (schedule) EmitShared(new Event{Event::kSeccompReady, "", 0, ExecCall::kExecve, "", 0, 0, 0, "", now, "", 0});
}

// Straight to JavaScript (the thread-safe function is), not through the control thread: a
// denial reaches the audit log, and the container's refused count, before the caller can
// act on its EACCES, as it did when one thread did everything.
void SeccompNotify::EmitShared(Event *e) { Deliver(new std::vector<Event *>{e}); }

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
  Deliver(b);
}

void SeccompNotify::Deliver(std::vector<Event *> *b) {
  napi_status st = tsfn_.NonBlockingCall(b, [counts = sdeny_](Napi::Env env, Napi::Function cb,
                                                              std::vector<Event *> *events) {
    Napi::Array arr = Napi::Array::New(env);
    uint32_t i = 0;
    for (Event *e : *events) {
      if (e->kind == Event::kSeccompReady) {
        // The counts as they are now (more may have come since the event was queued).
        Napi::Array d = SeccompDenialsToJs(env, *counts);
        for (uint32_t j = 0; j < d.Length(); j++) arr.Set(i++, d.Get(j));
        delete e;
        continue;
      }
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
        if (e->kind == Event::kHolderConnected) o.Set("version", Napi::Number::New(env, e->err));
      }
      arr.Set(i++, o);
      delete e;
    }
    delete events;
    cb.Call({arr});
  });
  if (st != napi_ok) {
    // A lost kSeccompReady leaves its counts in sdeny_ for the next take: let one be sent.
    for (Event *e : *b)
      if (e->kind == Event::kSeccompReady) {
        std::lock_guard<std::mutex> lock(sdeny_->mu);
        sdeny_->scheduled = false;
      }
    n_events_dropped_ += b->size();
    for (Event *e : *b) delete e;
    delete b;
  }
}

}  // namespace cgfence
