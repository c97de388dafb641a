// Which file a trapped execve/execveat would run: resolved the way the kernel will, but in
// the caller's own view of the filesystem (its root, its cwd, its fds), from outside it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace cgfence {

enum class ExecCall { kExecve, kExecveat };

struct ExecRequest {
  ExecCall call;
  uint32_t pid;  // the caller's thread, in our pid namespace
  uint64_t args[6];
  bool compat;  // a 32-bit caller: pointers and ints are the low 32 bits
};

struct ExecTarget {
  enum Status {
    kResolved,    // dev/ino name the file the kernel would open now
    kUnresolved,  // no file (the kernel will fail the exec itself) or not a regular file; err says why
    kGone,        // the notification is no longer valid: the caller died or was interrupted
  } status = kUnresolved;
  int err = 0;
  std::string path;  // as the caller passed it ("" for an fd exec)
  uint64_t dev = 0;  // kernel encoding: MAJOR << 20 | MINOR
  uint64_t ino = 0;
  int64_t ctime_sec = 0;  // its change stamp now (kResolved)
  uint32_t ctime_nsec = 0;
};

// An allow entry's stamp: the file's ctime when it was allowed (struct cgfence_exec_allow).
struct AllowStamp {
  int64_t ctime_sec;
  uint32_t ctime_nsec;
  bool interp_only;  // CGFENCE_ALLOW_INTERP_ONLY: allowed as a PT_INTERP loader, not by exec
};

// The verdict on a resolved target, as the kernel fence's cgfence_exec_allowed() gives it: an
// enum cgfence_exec_reason (CGFENCE_REASON_NONE: allowed). entry: the target's allow entry,
// nullptr when its identity is not on the list.
uint32_t JudgeTarget(const ExecTarget &t, const AllowStamp *entry);

// `still_valid` is SECCOMP_IOCTL_NOTIF_ID_VALID on the notification: called after every
// access to /proc/<pid>/..., because a pid is only known to mean the caller while the
// caller still waits in its syscall.
ExecTarget ResolveExecTarget(const ExecRequest &req, const std::function<bool()> &still_valid);

// The two halves of ResolveExecTarget, for a caller that looks the path up in a cache in
// between (seccomp-notify.cc). ReadExecPath reads the path argument from the caller's memory
// with process_vm_readv (no /proc/<pid>/mem open): 0 or an errno. What it read is only known
// to be the caller's while the notification is still valid, which ResolveExecPath checks.
int ReadExecPath(const ExecRequest &req, std::string *path);
ExecTarget ResolveExecPath(const ExecRequest &req, std::string path, const std::function<bool()> &still_valid);

// True when the absolute `path` resolves in the caller's root without meeting a symlink
// (or a procfs magic link) on the way: a path worth caching an allowed verdict for, since
// the links that change under a name are the common way one name comes to mean another file.
bool PathHasNoSymlink(uint32_t pid, const std::string &path);

// The caller's comm, for audit records ("" when it cannot be read).
std::string ReadComm(uint32_t pid);

}  // namespace cgfence
