#include "audit-netlink.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "errors.h"

namespace cgfence {

namespace {

constexpr size_t kMaxPending = 65536;

uint64_t MonoNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ULL + static_cast<uint64_t>(t.tv_nsec);
}

// The cgroup v2 path of a pid ("0::/path" of /proc/<pid>/cgroup), "" when it cannot be read.
std::string CgroupOf(const std::string &text) {
  const char *p = strstr(text.c_str(), " pid=");
  if (!p) return "";
  long pid = strtol(p + 5, nullptr, 10);
  if (pid <= 0) return "";
  char path[64];
  snprintf(path, sizeof(path), "/proc/%ld/cgroup", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return "";
  buf[n] = 0;
  for (char *line = buf; line && *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    if (strncmp(line, "0::", 3) == 0) return std::string(line + 3);
    line = nl ? nl + 1 : nullptr;
  }
  return "";
}

}  // namespace

Napi::Function AuditNetlink::Init(Napi::Env env) {
  return DefineClass(env, "AuditNetlink",
                     {InstanceMethod("take", &AuditNetlink::Take), InstanceMethod("stats", &AuditNetlink::Stats),
                      InstanceMethod("close", &AuditNetlink::Close), InstanceMethod("unref", &AuditNetlink::Unref)});
}

// new AuditNetlink(onReady: () => void): onReady is called when records wait for take().
AuditNetlink::AuditNetlink(const Napi::CallbackInfo &info) : Napi::ObjectWrap<AuditNetlink>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "AuditNetlink(onBatch)");
  sock_ = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_AUDIT);
  if (sock_ < 0) ThrowSystemError(env, "socket(NETLINK_AUDIT)", errno);
  // A burst of denials must not overflow the default buffer while JavaScript is busy.
  int size = 4 << 20;
  if (setsockopt(sock_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0) {
    setsockopt(sock_, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = AUDIT_NLGRP_READLOG;
  if (bind(sock_, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) < 0) {
    int e = errno;
    close(sock_);
    sock_ = -1;
    ThrowSystemError(env, "bind(AUDIT_NLGRP_READLOG)", e,
                     "the kernel's audit log multicast group needs CAP_AUDIT_READ");
  }
  wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_ < 0) {
    int e = errno;
    close(sock_);
    sock_ = -1;
    ThrowSystemError(env, "eventfd", e);
  }
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "cgfence-audit-netlink", 0, 1);
  thread_ = std::thread(&AuditNetlink::Run, this);
}

AuditNetlink::~AuditNetlink() { Stop(); }

void AuditNetlink::Run() {
  std::vector<char> buf(64 * 1024);
  while (!stop_) {
    pollfd p[2] = {{sock_, POLLIN, 0}, {wake_, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) break;
    std::vector<Record> got;
    for (;;) {
      ssize_t n = recv(sock_, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOBUFS) {
          overruns_++;
          continue;
        }
        break;  // EAGAIN: drained
      }
      for (nlmsghdr *h = reinterpret_cast<nlmsghdr *>(buf.data()); NLMSG_OK(h, static_cast<size_t>(n));
           h = NLMSG_NEXT(h, n)) {
        if (h->nlmsg_type != AUDIT_SECCOMP) continue;
        received_++;
        size_t len = h->nlmsg_len - NLMSG_HDRLEN;
        std::string text(static_cast<const char *>(NLMSG_DATA(h)),
                         strnlen(static_cast<const char *>(NLMSG_DATA(h)), len));
        std::string cg = CgroupOf(text);
        got.push_back(Record{std::move(text), std::move(cg), MonoNs()});
      }
    }
    if (got.empty()) continue;
    bool was_empty;
    {
      std::lock_guard<std::mutex> l(mu_);
      was_empty = pending_.empty();
      for (Record &r : got) {
        if (pending_.size() >= kMaxPending) {
          dropped_++;
          continue;
        }
        pending_.push_back(std::move(r));
      }
    }
    // One wake-up per batch: JavaScript takes whatever has arrived by then.
    if (was_empty) tsfn_.NonBlockingCall([](Napi::Env, Napi::Function cb) { cb.Call({}); });
  }
}

Napi::Value AuditNetlink::Take(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::vector<Record> records;
  {
    std::lock_guard<std::mutex> l(mu_);
    records.swap(pending_);
  }
  Napi::Array arr = Napi::Array::New(env, records.size());
  uint32_t i = 0;
  for (const Record &r : records) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("text", r.text);
    o.Set("cgroup", r.cgroup);
    o.Set("tsMonoNs", Napi::BigInt::New(env, r.ts));
    arr.Set(i++, o);
  }
  return arr;
}

void AuditNetlink::Stop() {
  if (closed_.exchange(true)) return;
  stop_ = true;
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (write(wake_, &one, sizeof(one)) < 0) { /* the thread is awake anyway */
    }
    thread_.join();
  }
  if (sock_ >= 0) close(sock_);
  if (wake_ >= 0) close(wake_);
  sock_ = wake_ = -1;
  if (tsfn_) tsfn_.Release();
}

Napi::Value AuditNetlink::Stats(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("received", Napi::Number::New(env, static_cast<double>(received_.load())));
  o.Set("overruns", Napi::Number::New(env, static_cast<double>(overruns_.load())));
  o.Set("dropped", Napi::Number::New(env, static_cast<double>(dropped_.load())));
  return o;
}

Napi::Value AuditNetlink::Close(const Napi::CallbackInfo &info) {
  Stop();
  return info.Env().Undefined();
}

Napi::Value AuditNetlink::Unref(const Napi::CallbackInfo &info) {
  if (!closed_) tsfn_.Unref(info.Env());
  return info.Env().Undefined();
}

}  // namespace cgfence
