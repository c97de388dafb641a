// The daemon's side of the fd-holder protocol (fd-holder/protocol.h): takes over the notify
// fds cgfence-fd-holder holds and receives the ones runc delivers to it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cgfence {

struct HeldFd {
  uint64_t serial;
  int pid;
  std::string key;
  int fd;
};

// Seccomp denials the holder answered EPERM while no daemon was connected (DENIED).
struct HeldDenials {
  uint64_t serial;
  uint32_t arch;
  int nr;  // -1: kinds beyond what the holder names one by one
  uint64_t count;
};

class FdHolderClient {
 public:
  ~FdHolderClient() { Disconnect(); }
  // 0 or an errno.
  int Connect(const std::string &path);
  void Disconnect();
  bool connected() const { return sock_ >= 0; }
  int fd() const { return sock_; }
  // Each returns 0 or an errno; a failed send means the holder is gone.
  int Put(uint64_t serial, int pid, const std::string &key, int fd);
  int Drop(uint64_t serial);
  int Quit();
  // Takes over: everything the holder keeps (its fds now ours too), the shared in-flight
  // table (an fd, or -1 when the holder has none) and the holder's protocol version
  // (FDH_VERSION; 0: a holder of before versions, which answers denials CONTINUE).
  int Fetch(std::vector<HeldFd> *out, int *table_fd, std::vector<HeldDenials> *denied = nullptr,
            int *version = nullptr);
  // The holder's pid (SO_PEERCRED; 0 when it is not visible in our pid namespace).
  int PeerPid() const;
  // One fd runc has delivered since ("NEW"), without waiting: 0, EAGAIN when there is
  // none, or why the holder is gone.
  int ReceiveNew(HeldFd *out);

 private:
  int Send(const std::string &text, int fd);
  // One message: its text and its first fd (-1 when none). 0, or an errno.
  int Receive(std::string *text, int *fd, int flags);
  int sock_ = -1;
};

}  // namespace cgfence
