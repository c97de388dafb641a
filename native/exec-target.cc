#include "exec-target.h"

#include <linux/types.h>

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <utility>

#include "cgfence-abi.h"

namespace cgfence {
namespace {

constexpr int kMaxSymlinks = 40;   // the kernel's own limit
constexpr size_t kPathMax = 4096;  // PATH_MAX, NUL included
constexpr int kGone = -1;          // a walk result: the notification went away mid-walk

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd &operator=(Fd &&o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

// process_vm_readv fails a read that runs into an unmapped page, so each read stops at the
// end of the current page; a path that ends just before a hole still reads.
int ReadString(pid_t pid, uint64_t addr, std::string *out) {
  out->clear();
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  char buf[kPathMax];
  while (out->size() < kPathMax) {
    size_t chunk = page - (addr % page);
    if (chunk > kPathMax - out->size()) chunk = kPathMax - out->size();
    iovec local{buf, chunk};
    iovec remote{reinterpret_cast<void *>(addr), chunk};
    ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (n < 0) return errno;
    if (n == 0) return EFAULT;
    if (void *nul = memchr(buf, 0, static_cast<size_t>(n))) {
      out->append(buf, static_cast<char *>(nul) - buf);
      return 0;
    }
    out->append(buf, static_cast<size_t>(n));
    addr += static_cast<uint64_t>(n);
  }
  return ENAMETOOLONG;
}

std::deque<std::string> Split(const std::string &p) {
  std::deque<std::string> parts;
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (j > i) parts.emplace_back(p, i, j - i);
    i = j + 1;
  }
  return parts;
}

// The caller's tgid and tid as its own pid namespace numbers them: what "self" and
// "thread-self" mean in the /proc it sees.
bool NsIds(pid_t pid, long *tgid, long *tid) {
  char file[64];
  snprintf(file, sizeof(file), "/proc/%d/status", pid);
  FILE *f = fopen(file, "re");
  if (!f) return false;
  char line[512];
  bool got_tgid = false, got_tid = false;
  auto last = [](const char *s) {
    const char *sp = strrchr(s, '\t');
    return strtol(sp ? sp + 1 : s, nullptr, 10);
  };
  while (fgets(line, sizeof(line), f)) {
    line[strcspn(line, "\n")] = '\0';
    if (!strncmp(line, "NStgid:", 7)) {
      *tgid = last(line);
      got_tgid = true;
    } else if (!strncmp(line, "NSpid:", 6)) {
      *tid = last(line);
      got_tid = true;
    }
  }
  fclose(f);
  return got_tgid && got_tid;
}

bool SameFile(const struct stat &a, int fd) {
  struct stat b;
  return fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

struct Walk {
  int root;
  pid_t pid;
  bool follow_last;
  const std::function<bool()> &still_valid;
};

// Resolves `path` from `start` the way the kernel would for the caller: symlinks are read
// and re-anchored at the caller's root (never ours), ".." stops at that root, and inside
// procfs the kernel follows the links itself, because /proc/<pid>/fd/N, exe, cwd and root
// are magic links whose text ("memfd:x (deleted)", "pipe:[1]") is no path but whose target
// is the real file. "self" and "thread-self" are the one procfs lookup that depends on who
// looks, so they are replaced with the caller's own numbers.
int WalkInRoot(const Walk &w, int start, const std::string &path, Fd *out) {
  struct stat root_st;
  if (fstat(w.root, &root_st)) return errno;
  Fd cur(dup(start));
  if (!cur) return errno;
  std::deque<std::string> comps = Split(path);
  int links = 0;
  while (!comps.empty()) {
    std::string c = std::move(comps.front());
    comps.pop_front();
    if (c == ".") continue;
    if (c == "..") {
      if (SameFile(root_st, cur.get())) continue;
      Fd up(openat(cur.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!up) return errno;
      cur = std::move(up);
      continue;
    }
    const bool last = comps.empty();
    struct statfs sfs;
    if (fstatfs(cur.get(), &sfs) == 0 && sfs.f_type == PROC_SUPER_MAGIC) {
      if (c == "self" || c == "thread-self") {
        long tgid = 0, tid = 0;
        bool ok = NsIds(w.pid, &tgid, &tid);
        if (!w.still_valid()) return kGone;
        if (!ok) return ESRCH;
        if (c == "thread-self") {
          comps.push_front(std::to_string(tid));
          comps.push_front("task");
        }
        c = std::to_string(tgid);
      }
      int flags = O_PATH | O_CLOEXEC | ((last && !w.follow_last) ? O_NOFOLLOW : 0);
      Fd next(openat(cur.get(), c.c_str(), flags));
      int e = next ? 0 : errno;
      if (!w.still_valid()) return kGone;
      if (e) return e;
      cur = std::move(next);
      continue;
    }
    Fd next(openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!next) return errno;
    struct stat st;
    if (fstat(next.get(), &st)) return errno;
    if (S_ISLNK(st.st_mode) && (!last || w.follow_last)) {
      if (++links > kMaxSymlinks) return ELOOP;
      char buf[kPathMax];
      ssize_t n = readlinkat(next.get(), "", buf, sizeof(buf));
      if (n < 0) return errno;
      if (static_cast<size_t>(n) == sizeof(buf)) return ENAMETOOLONG;
      std::string target(buf, static_cast<size_t>(n));
      std::deque<std::string> parts = Split(target);
      comps.insert(comps.begin(), parts.begin(), parts.end());
      if (!target.empty() && target[0] == '/') {
        cur = Fd(dup(w.root));
        if (!cur) return errno;
      }
      continue;
    }
    if (!last && !S_ISDIR(st.st_mode)) return ENOTDIR;
    cur = std::move(next);
  }
  *out = std::move(cur);
  return 0;
}

// The common case in one syscall: an absolute path without procfs magic. RESOLVE_IN_ROOT
// anchors absolute symlinks and ".." at the caller's root as the walk does; anything the
// fast path refuses (a magic link, /proc/self seen from outside, no openat2) takes the walk.
int FastResolve(int root, const std::string &path, bool follow_last, Fd *out) {
  struct open_how how;
  memset(&how, 0, sizeof(how));
  how.flags = O_PATH | O_CLOEXEC | (follow_last ? 0 : O_NOFOLLOW);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  long fd = syscall(SYS_openat2, root, path.c_str(), &how, sizeof(how));
  if (fd < 0) return errno;
  *out = Fd(static_cast<int>(fd));
  return 0;
}

int OpenProc(pid_t pid, const char *what, int flags, Fd *out) {
  char p[64];
  snprintf(p, sizeof(p), "/proc/%d/%s", pid, what);
  *out = Fd(open(p, flags | O_CLOEXEC));
  return *out ? 0 : errno;
}

}  // namespace

static uint64_t ArgOf(const ExecRequest &req, int i) {
  return req.compat ? (req.args[i] & 0xffffffffULL) : req.args[i];
}

int ReadExecPath(const ExecRequest &req, std::string *path) {
  const uint64_t addr = ArgOf(req, req.call == ExecCall::kExecveat ? 1 : 0);
  return ReadString(static_cast<pid_t>(req.pid), addr, path);
}

ExecTarget ResolveExecTarget(const ExecRequest &req, const std::function<bool()> &still_valid) {
  std::string path;
  int e = ReadExecPath(req, &path);
  // The memory read is only known to be the caller's if the caller still waits.
  if (!still_valid()) {
    ExecTarget t;
    t.status = ExecTarget::kGone;
    return t;
  }
  if (e) {
    ExecTarget t;
    t.path = std::move(path);
    t.err = e;
    return t;
  }
  return ResolveExecPath(req, std::move(path), still_valid);
}

ExecTarget ResolveExecPath(const ExecRequest &req, std::string path, const std::function<bool()> &still_valid) {
  ExecTarget t;
  t.path = std::move(path);
  auto arg = [&](int i) { return ArgOf(req, i); };
  const bool at = req.call == ExecCall::kExecveat;
  const int dirfd = at ? static_cast<int>(static_cast<int32_t>(arg(0))) : AT_FDCWD;
  const int flags = at ? static_cast<int>(arg(4)) : 0;
  const bool follow = !(flags & AT_SYMLINK_NOFOLLOW);
  const pid_t pid = static_cast<pid_t>(req.pid);

  auto gone = [&]() {
    t.status = ExecTarget::kGone;
    return t;
  };
  auto unresolved = [&](int e) {
    t.status = ExecTarget::kUnresolved;
    t.err = e;
    return t;
  };

  int e = 0;
  Fd file;
  if (t.path.empty()) {
    if (!(flags & AT_EMPTY_PATH)) return unresolved(ENOENT);
    // fexecve(3) and execveat(fd, "", AT_EMPTY_PATH): the file is the one the fd holds,
    // memfds included; opening the magic link reaches it whatever its name says.
    char what[32];
    if (dirfd == AT_FDCWD)
      snprintf(what, sizeof(what), "cwd");
    else
      snprintf(what, sizeof(what), "fd/%d", dirfd);
    e = OpenProc(pid, what, O_PATH, &file);
    if (!still_valid()) return gone();
    if (e) return unresolved(e == ENOENT ? EBADF : e);
  } else {
    Fd root;
    e = OpenProc(pid, "root", O_PATH | O_DIRECTORY, &root);
    if (!still_valid()) return gone();
    if (e) return unresolved(e);
    const Walk w{root.get(), pid, follow, still_valid};
    if (t.path[0] == '/') {
      e = FastResolve(root.get(), t.path, follow, &file);
      if (e) e = WalkInRoot(w, root.get(), t.path, &file);
    } else {
      Fd start;
      char what[32];
      if (dirfd == AT_FDCWD)
        snprintf(what, sizeof(what), "cwd");
      else
        snprintf(what, sizeof(what), "fd/%d", dirfd);
      e = OpenProc(pid, what, O_PATH, &start);
      if (!still_valid()) return gone();
      if (e) return unresolved(e == ENOENT && dirfd != AT_FDCWD ? EBADF : e);
      e = WalkInRoot(w, start.get(), t.path, &file);
    }
    if (e == kGone) return gone();
    if (e) return unresolved(e);
  }

  struct stat st;
  if (fstat(file.get(), &st)) return unresolved(errno);
  if (!still_valid()) return gone();
  if (!S_ISREG(st.st_mode)) return unresolved(EACCES);  // the kernel refuses it itself
  t.dev = (static_cast<uint64_t>(major(st.st_dev)) << 20) | minor(st.st_dev);
  t.ino = st.st_ino;
  t.ctime_sec = st.st_ctim.tv_sec;
  t.ctime_nsec = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  t.status = ExecTarget::kResolved;
  return t;
}

uint32_t JudgeTarget(const ExecTarget &t, const AllowStamp *entry) {
  if (!entry) return CGFENCE_REASON_NOT_ALLOWED;
  if (entry->ctime_sec != t.ctime_sec || entry->ctime_nsec != t.ctime_nsec) return CGFENCE_REASON_MODIFIED;
  if (entry->interp_only) return CGFENCE_REASON_INTERP_ONLY;
  return CGFENCE_REASON_NONE;
}

bool PathHasNoSymlink(uint32_t pid, const std::string &path) {
  Fd root;
  if (OpenProc(static_cast<pid_t>(pid), "root", O_PATH | O_DIRECTORY, &root)) return false;
  struct open_how how;
  memset(&how, 0, sizeof(how));
  // No O_NOFOLLOW: with O_PATH it would open a trailing symlink itself instead of failing.
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  long fd = syscall(SYS_openat2, root.get(), path.c_str(), &how, sizeof(how));
  if (fd < 0) return false;
  close(static_cast<int>(fd));
  return true;
}

std::string ReadComm(uint32_t pid) {
  char p[64];
  snprintf(p, sizeof(p), "/proc/%u/comm", pid);
  FILE *f = fopen(p, "re");
  if (!f) return "";
  char buf[64] = {0};
  if (!fgets(buf, sizeof(buf), f)) buf[0] = '\0';
  fclose(f);
  buf[strcspn(buf, "\n")] = '\0';
  return buf;
}

}  // namespace cgfence
