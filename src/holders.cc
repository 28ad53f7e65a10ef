#include "holders.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "unique_fd.h"

namespace locker {

namespace {

// The identity of a lock as both /proc/locks and fdinfo print it.
using Signature = std::tuple<std::string, int, off_t, off_t>;

Signature SignatureOf(const LockLine& line) {
  return {line.kind, line.mode, line.start, line.length};
}

bool IsNumber(const char* name) {
  if (!*name) return false;
  for (; *name; ++name) {
    if (*name < '0' || *name > '9') return false;
  }
  return true;
}

// pids whose descriptors show a lock with each wanted signature on the file.
std::map<Signature, std::set<pid_t>> ScanDescriptors(
    const ProcSource& proc, unsigned major, unsigned minor, unsigned long long ino,
    const std::set<Signature>& wanted) {
  std::map<Signature, std::set<pid_t>> found;
  proc.ForEachFdinfo([&](pid_t pid, const std::string& fdinfo) {
    ForEachLockLine(fdinfo, "lock:", [&](const LockLine& line) {
      if (line.waiting) return;
      if (line.dev_major != major || line.dev_minor != minor || line.ino != ino) return;
      const Signature signature = SignatureOf(line);
      if (wanted.count(signature)) found[signature].insert(pid);
    });
  });
  return found;
}

// The files under /proc themselves.
class LiveProcSource final : public ProcSource {
 public:
  int ReadLocks(std::string* text) const override {
    std::ifstream locks("/proc/locks");
    if (!locks) return errno ? errno : ENOENT;
    text->assign(std::istreambuf_iterator<char>(locks), std::istreambuf_iterator<char>());
    return 0;
  }

  void ForEachFdinfo(
      const std::function<void(pid_t, const std::string&)>& visit) const override {
    DIR* proc = ::opendir("/proc");
    if (!proc) return;
    while (dirent* process = ::readdir(proc)) {
      if (!IsNumber(process->d_name)) continue;
      const std::string fdinfo = std::string("/proc/") + process->d_name + "/fdinfo";
      DIR* fds = ::opendir(fdinfo.c_str());
      if (!fds) continue;  // gone, or not ours to read
      const pid_t pid = static_cast<pid_t>(std::atoi(process->d_name));
      while (dirent* fd = ::readdir(fds)) {
        if (!IsNumber(fd->d_name)) continue;
        std::ifstream in(fdinfo + "/" + fd->d_name);
        visit(pid, std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
      }
      ::closedir(fds);
    }
    ::closedir(proc);
  }

  std::string Cmdline(pid_t pid) const override {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
};

// Filesystem magic numbers (statfs f_type) of filesystems whose locks are
// not all in /proc/locks, from linux/magic.h and the filesystems' sources.
constexpr unsigned long kHiddenLockFilesystems[] = {
    0x65735546,  // FUSE: GlusterFS, ceph-fuse, sshfs, ...
    0x6969,      // NFS (v2, v3, v4)
    0x00c36400,  // CephFS (kernel client)
    0xff534d42,  // CIFS
    0xfe534d42,  // SMB2
    0x517b,      // SMB
    0x0bd00bd0,  // Lustre
    0x01021997,  // 9P
    0x5346414f,  // AFS
    0x6b414653,  // kAFS
    0x7461636f,  // OCFS2
    0x01161970,  // GFS2
};

#ifndef F_OFD_GETLK
#define F_OFD_GETLK 36
#endif

// One conflicting lock at or after start, as F_OFD_GETLK (or F_GETLK) on a
// description that holds nothing sees it: false when none. Asks for a write
// lock, which every lock conflicts with.
bool FirstLockFrom(int fd, off_t start, struct flock* found) {
  struct flock query = {};
  query.l_type = F_WRLCK;
  query.l_whence = SEEK_SET;
  query.l_start = start;
  query.l_len = 0;
  *found = query;
  if (::fcntl(fd, F_OFD_GETLK, found) != 0) {
    *found = query;
    if (::fcntl(fd, F_GETLK, found) != 0) return false;
  }
  return found->l_type != F_UNLCK;
}

// The pid F_GETLK gives for a lock on [start, start + length), or -1.
pid_t ClassicPid(int fd, const struct flock& lock) {
  struct flock query = {};
  query.l_type = F_WRLCK;
  query.l_whence = SEEK_SET;
  query.l_start = lock.l_start;
  query.l_len = lock.l_len;
  if (::fcntl(fd, F_GETLK, &query) != 0 || query.l_type == F_UNLCK) return -1;
  return query.l_pid > 0 ? query.l_pid : -1;
}

// The mode of a whole-file flock(2) lock someone holds, found by trying to
// take one without waiting; 0 when nobody holds one.
int FlockHolderMode(int fd) {
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
    ::flock(fd, LOCK_UN);
    return 0;
  }
  if (errno != EWOULDBLOCK) return 0;
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
    ::flock(fd, LOCK_UN);
    return LOCK_SH;
  }
  return errno == EWOULDBLOCK ? LOCK_EX : 0;
}

bool AlreadyListed(const std::vector<Holder>& holders, const Holder& probed) {
  for (const Holder& holder : holders) {
    if (!holder.remote && holder.mode == probed.mode && holder.start == probed.start &&
        holder.length == probed.length) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool ProcLocksIncomplete(int fd) {
  struct statfs fs;
  if (::fstatfs(fd, &fs) != 0) return false;
  for (unsigned long magic : kHiddenLockFilesystems) {
    if (static_cast<unsigned long>(fs.f_type) == magic) return true;
  }
  return false;
}

Status AddProbedHolders(int fd, const std::string& path, std::vector<Holder>* out) {
  // The probe needs a description of its own, so that the caller's own
  // locks count as holders and the flock try cannot convert them.
  UniqueFd probe;
  if (fd >= 0) {
    if (!ProcLocksIncomplete(fd)) return Status::Ok();
    probe.reset(::open(("/proc/self/fd/" + std::to_string(fd)).c_str(),
                       O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  } else {
    probe.reset(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  }
  if (probe.get() < 0) {
    // Without a probe, an empty list would read "nobody": say we cannot
    // tell instead. What /proc/locks showed still stands.
    const int err = errno;
    return out->empty() ? Status::Error(err) : Status::Ok();
  }
  if (!ProcLocksIncomplete(probe.get())) return Status::Ok();

  constexpr int kMaxRanges = 64;  // diagnostics: enough to say who is there
  bool ranges_found = false;
  off_t start = 0;
  struct flock lock;
  for (int i = 0; i < kMaxRanges && FirstLockFrom(probe.get(), start, &lock); ++i) {
    ranges_found = true;
    Holder holder;
    holder.kind = "posix";
    holder.mode = lock.l_type == F_RDLCK ? LOCK_SH : LOCK_EX;
    holder.start = lock.l_start;
    holder.length = lock.l_len;
    holder.pid = ClassicPid(probe.get(), lock);
    holder.remote = true;
    if (!AlreadyListed(*out, holder)) out->push_back(holder);
    if (lock.l_len <= 0 || lock.l_start > std::numeric_limits<off_t>::max() - lock.l_len) break;  // to EOF
    start = lock.l_start + lock.l_len;
  }
  if (!ranges_found) {
    Holder holder;
    holder.kind = "flock";
    holder.mode = FlockHolderMode(probe.get());
    holder.remote = true;
    if (holder.mode != 0 && !AlreadyListed(*out, holder)) out->push_back(holder);
  }
  return Status::Ok();
}

bool ParseLockLine(const std::string& text, LockLine* out) {
  std::istringstream in(text);
  std::string id, word;
  if (!(in >> id) || id.empty() || id.back() != ':') return false;
  if (!(in >> word)) return false;
  LockLine line;
  if (word == "->") {
    line.waiting = true;
    if (!(in >> word)) return false;
  }
  if (word == "FLOCK") line.kind = "flock";
  else if (word == "POSIX") line.kind = "posix";
  else if (word == "OFDLCK") line.kind = "ofd";
  std::string advisory, type, device, start, end;
  long long pid;
  if (!(in >> advisory >> type >> pid >> device >> start >> end)) return false;
  if (type == "READ") line.mode = LOCK_SH;
  else if (type == "WRITE") line.mode = LOCK_EX;
  else line.kind.clear();  // unlocks in progress, leases: not holders
  if (::sscanf(device.c_str(), "%x:%x:%llu", &line.dev_major, &line.dev_minor, &line.ino) != 3) {
    return false;
  }
  line.pid = static_cast<pid_t>(pid);
  line.start = static_cast<off_t>(std::strtoll(start.c_str(), nullptr, 10));
  line.length = end == "EOF" ? 0
                             : static_cast<off_t>(std::strtoll(end.c_str(), nullptr, 10)) -
                                   line.start + 1;
  *out = line;
  return true;
}

void ForEachLockLine(const std::string& text, const std::string& prefix,
                     const std::function<void(const LockLine&)>& fn) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, prefix.size(), prefix) != 0) continue;
    LockLine lock;
    if (ParseLockLine(line.substr(prefix.size()), &lock) && !lock.kind.empty()) fn(lock);
  }
}

const ProcSource& LiveProc() {
  static const LiveProcSource live;
  return live;
}

std::string CommandFromCmdline(std::string raw) {
  while (!raw.empty() && raw.back() == '\0') raw.pop_back();
  for (char& c : raw) {
    if (c == '\0') c = ' ';
  }
  return raw;
}

Status ListHolders(dev_t dev, ino_t ino, std::vector<Holder>* out) {
  return ListHolders(LiveProc(), dev, ino, out);
}

Status ListHolders(const ProcSource& proc, dev_t dev, ino_t ino, std::vector<Holder>* out) {
  out->clear();
  std::string text;
  if (const int err = proc.ReadLocks(&text)) return Status::Error(err);
  const unsigned major = ::major(dev), minor = ::minor(dev);

  std::vector<LockLine> lines;
  std::set<Signature> shared;  // flock and OFD locks: find their holders
  ForEachLockLine(text, "", [&](const LockLine& line) {
    if (line.waiting) return;
    if (line.dev_major != major || line.dev_minor != minor || line.ino != ino) return;
    lines.push_back(line);
    if (line.kind != "posix") shared.insert(SignatureOf(line));
  });
  const auto holders = shared.empty() ? std::map<Signature, std::set<pid_t>>()
                                      : ScanDescriptors(proc, major, minor, ino, shared);

  std::set<std::pair<Signature, pid_t>> reported;
  for (const LockLine& line : lines) {
    std::set<pid_t> pids;
    if (line.kind == "posix") {
      // pid 0: a holder in a pid namespace the reader cannot see into.
      if (line.pid > 0) pids.insert(line.pid);
    } else {
      auto it = holders.find(SignatureOf(line));
      if (it != holders.end()) pids = it->second;
    }
    if (pids.empty()) pids.insert(-1);  // not visible to us: say so
    for (pid_t pid : pids) {
      // Identical locks of one process (or one shared description) once.
      if (pid != -1 && !reported.insert({SignatureOf(line), pid}).second) continue;
      Holder holder;
      holder.pid = pid;
      holder.kind = line.kind;
      holder.mode = line.mode;
      holder.start = line.start;
      holder.length = line.length;
      if (pid > 0) holder.command = CommandFromCmdline(proc.Cmdline(pid));
      out->push_back(holder);
    }
  }
  return Status::Ok();
}

Status ListWaiters(dev_t dev, ino_t ino, std::vector<Holder>* out) {
  return ListWaiters(LiveProc(), dev, ino, out);
}

Status ListWaiters(const ProcSource& proc, dev_t dev, ino_t ino, std::vector<Holder>* out) {
  std::string text;
  if (const int err = proc.ReadLocks(&text)) return Status::Error(err);
  const unsigned major = ::major(dev), minor = ::minor(dev);
  ForEachLockLine(text, "", [&](const LockLine& line) {
    if (!line.waiting) return;
    if (line.dev_major != major || line.dev_minor != minor || line.ino != ino) return;
    Holder waiter;
    // OFD requests show pid -1; other pids are of live, blocked processes.
    waiter.pid = line.pid > 0 ? line.pid : -1;
    waiter.kind = line.kind;
    waiter.mode = line.mode;
    waiter.start = line.start;
    waiter.length = line.length;
    waiter.waiting = true;
    if (waiter.pid > 0) waiter.command = CommandFromCmdline(proc.Cmdline(waiter.pid));
    out->push_back(waiter);
  });
  return Status::Ok();
}

}  // namespace locker
