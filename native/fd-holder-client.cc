#include "fd-holder-client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "fd-holder/protocol.h"

namespace cgfence {

// The holder answers at once; a holder that does not is treated as gone rather than
// stalling the notify loop.
static constexpr int kTimeoutSec = 5;

int FdHolderClient::Connect(const std::string &path) {
  Disconnect();
  sockaddr_un sa;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof(sa.sun_path)) return ENAMETOOLONG;
  memcpy(sa.sun_path, path.c_str(), path.size());
  int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) return errno;
  timeval tv{kTimeoutSec, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(s, reinterpret_cast<sockaddr *>(&sa), sizeof(sa))) {
    int e = errno;
    close(s);
    return e;
  }
  sock_ = s;
  return 0;
}

void FdHolderClient::Disconnect() {
  if (sock_ >= 0) close(sock_);
  sock_ = -1;
}

int FdHolderClient::Send(const std::string &text, int fd) {
  if (sock_ < 0) return ENOTCONN;
  iovec iov{const_cast<char *>(text.data()), text.size()};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    cmsghdr align;
  } u;
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof(u.buf);
    cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(sock_, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    Disconnect();
    return e;
  }
  return 0;
}

int FdHolderClient::Put(uint64_t serial, int pid, const std::string &key, int fd) {
  if (key.size() > FDH_MAX_KEY) return ENAMETOOLONG;
  char head[64];
  snprintf(head, sizeof(head), "PUT %llu %d ", static_cast<unsigned long long>(serial), pid);
  return Send(head + key, fd);
}

int FdHolderClient::Drop(uint64_t serial) {
  char m[64];
  snprintf(m, sizeof(m), "DROP %llu", static_cast<unsigned long long>(serial));
  return Send(m, -1);
}

int FdHolderClient::Quit() { return Send("QUIT", -1); }

int FdHolderClient::Receive(std::string *text, int *fd, int flags) {
  char buf[FDH_MAX_MSG + 1];
  union {
    char b[CMSG_SPACE(sizeof(int) * 4)];
    cmsghdr align;
  } u;
  iovec iov{buf, FDH_MAX_MSG};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.b;
  msg.msg_controllen = sizeof(u.b);
  ssize_t n;
  do n = recvmsg(sock_, &msg, MSG_CMSG_CLOEXEC | flags);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return EAGAIN;
  if (n <= 0) {
    int e = n < 0 ? errno : ECONNRESET;
    Disconnect();
    return e;
  }
  *fd = -1;
  for (cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t j = 0; j < k; j++) {
      int got;
      memcpy(&got, CMSG_DATA(c) + j * sizeof(int), sizeof(int));
      if (*fd < 0)
        *fd = got;
      else
        close(got);
    }
  }
  text->assign(buf, static_cast<size_t>(n));
  return 0;
}

// "FD|NEW <serial> <pid> <key>" with its fd.
static bool ParseEntry(const std::string &text, const char *verb, int fd, HeldFd *out) {
  unsigned long long serial;
  int pid, off = 0;
  std::string fmt = std::string(verb) + " %llu %d %n";
  if (fd < 0 || sscanf(text.c_str(), fmt.c_str(), &serial, &pid, &off) != 2 || off <= 0) return false;
  *out = HeldFd{serial, pid, text.substr(static_cast<size_t>(off)), fd};
  return true;
}

int FdHolderClient::PeerPid() const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (sock_ < 0 || getsockopt(sock_, SOL_SOCKET, SO_PEERCRED, &cred, &len)) return 0;
  return cred.pid;
}

int FdHolderClient::Fetch(std::vector<HeldFd> *out, int *table_fd, std::vector<HeldDenials> *denied, int *version) {
  *table_fd = -1;
  if (version) *version = 0;
  int e = Send("GET", -1);
  if (e) return e;
  for (;;) {
    std::string text;
    int fd;
    e = Receive(&text, &fd, 0);
    if (e) return e == EAGAIN ? ETIMEDOUT : e;  // blocking, with SO_RCVTIMEO
    if (!text.compare(0, 3, "END")) {
      *table_fd = fd;
      // "END <count> <version>"; an older holder's "END <count>" is version 0.
      size_t count;
      int v;
      if (version && sscanf(text.c_str(), "END %zu %d", &count, &v) == 2 && v > 0) *version = v;
      return 0;
    }
    HeldFd h;
    unsigned long long serial, count;
    unsigned arch;
    int nr;
    if (ParseEntry(text, "FD", fd, &h))
      out->push_back(h);
    else if (fd >= 0)
      close(fd);
    else if (denied && sscanf(text.c_str(), "DENIED %llu %u %d %llu", &serial, &arch, &nr, &count) == 4)
      denied->push_back(HeldDenials{serial, arch, nr, count});
  }
}

int FdHolderClient::ReceiveNew(HeldFd *out) {
  for (;;) {
    std::string text;
    int fd;
    int e = Receive(&text, &fd, MSG_DONTWAIT);
    if (e) return e;
    if (ParseEntry(text, "NEW", fd, out)) return 0;
    if (fd >= 0) close(fd);  // nothing else is sent unasked
  }
}

}  // namespace cgfence
