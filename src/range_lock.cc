#include "range_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "process.h"
#include "wait_timer.h"

namespace locker {

namespace {

struct InodeKey {
  dev_t dev;
  ino_t ino;
  bool operator<(const InodeKey& o) const {
    return dev != o.dev ? dev < o.dev : ino < o.ino;
  }
};

// Where a range lock lives: its descriptor and that descriptor's inode.
struct Where {
  int fd;
  InodeKey inode;
};

// OFD backend: the holds of each descriptor; the kernel state of its open
// file description is exactly the strongest mode per byte.
struct DescriptorEntry {
  InodeKey inode;
  RangeTable table;    // holds, including requests still at the kernel
  RangeTable pending;  // just those in-flight requests
  int live = 0;        // RangeLocks registered here
};

// Classic backend: the process holds one POSIX lock per byte and inode, the
// union of all its owners' holds; owners (descriptors) are told apart here.
struct InodeEntry {
  RangeTable all;      // holds, including requests still at the kernel
  RangeTable pending;  // just those in-flight requests
  std::map<int, RangeTable> by_owner;
  std::vector<UniqueFd> deferred;  // closing these would drop our locks
  int live = 0;
};

std::mutex g_mutex;
std::condition_variable g_released;  // classic backend, in-process waiters
std::map<int, DescriptorEntry> g_by_fd;
std::map<InodeKey, InodeEntry> g_by_inode;

bool DetectOfd() {
#ifdef F_OFD_SETLK
  // Perl's truth: unset, "" and "0" are false, anything else is true.
  const char* no_ofd = ::getenv("FILE_LOCKER_NO_OFD");
  return !(no_ofd && *no_ofd && std::string(no_ofd) != "0");
#else
  return false;
#endif
}

const bool g_ofd = DetectOfd();

// A forked child holds none of the parent's classic locks, and must not
// inherit a mutex some other thread held at the fork.
const bool g_atfork = [] {
  ::pthread_atfork([] { g_mutex.lock(); }, [] { g_mutex.unlock(); },
                   [] {
                     g_mutex.unlock();
                     for (auto& [key, entry] : g_by_inode) {
                       for (auto& fd : entry.deferred) fd.reset();
                     }
                     g_by_inode.clear();
                   });
  return true;
}();

RangeMode ToRangeMode(int mode) {
  return (mode & ~LOCK_NB) == LOCK_EX ? RangeMode::kExclusive : RangeMode::kShared;
}

short KernelType(RangeMode mode) {
  switch (mode) {
    case RangeMode::kExclusive: return F_WRLCK;
    case RangeMode::kShared: return F_RDLCK;
    default: return F_UNLCK;
  }
}

struct flock MakeFlock(short type, off_t start, off_t end) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = end == kRangeEnd ? 0 : end - start;
  fl.l_pid = 0;
  return fl;
}

// One fcntl lock request; returns 0 or an errno, every "busy" as EWOULDBLOCK.
int KernelSet(int fd, RangeMode mode, off_t start, off_t end, bool wait) {
  struct flock fl = MakeFlock(KernelType(mode), start, end);
#ifdef F_OFD_SETLK
  const int cmd = g_ofd ? (wait ? F_OFD_SETLKW : F_OFD_SETLK) : (wait ? F_SETLKW : F_SETLK);
#else
  const int cmd = wait ? F_SETLKW : F_SETLK;
#endif
  if (::fcntl(fd, cmd, &fl) == 0) return 0;
  return errno == EAGAIN || errno == EACCES ? EWOULDBLOCK : errno;
}

struct Run {
  off_t start;
  off_t end;
  RangeMode mode;
};

// Appends [from, to) in mode to runs, merging with an adjacent equal run.
void AddRun(std::vector<Run>* runs, off_t from, off_t to, RangeMode mode) {
  if (!runs->empty() && runs->back().end == from && runs->back().mode == mode) {
    runs->back().end = to;
  } else {
    runs->push_back({from, to, mode});
  }
}

// The table whose strongest mode per byte is what the kernel holds.
RangeTable& KernelTable(const Where& where) {
  if (g_ofd) {
    DescriptorEntry& entry = g_by_fd[where.fd];
    if (entry.table.empty() && entry.pending.empty()) {
      entry.inode = where.inode;  // a new entry, or one nothing holds
    } else if (entry.inode.dev != where.inode.dev || entry.inode.ino != where.inode.ino) {
      // The descriptor number was closed and reused for another file while
      // guards still counted on it: their holds died with the old file.
      entry = DescriptorEntry{where.inode, {}, {}, entry.live};
    }
    return entry.table;
  }
  return g_by_inode[where.inode].all;
}

// Classic backend: whether another owner in this process holds bytes of
// [start, end) in a mode that conflicts with `mode`; fills *conflict.
bool ConflictsInProcess(const Where& where, RangeMode mode, off_t start, off_t end,
                        Conflict* conflict) {
  auto inode = g_by_inode.find(where.inode);
  if (inode == g_by_inode.end()) return false;
  const RangeTable empty;
  auto own_it = inode->second.by_owner.find(where.fd);
  const RangeTable& own = own_it == inode->second.by_owner.end() ? empty : own_it->second;
  bool found = false;
  inode->second.all.Walk(start, end, [&](off_t a, off_t b, const Holds& all) {
    if (found || all == Holds()) return;
    own.Walk(a, b, [&](off_t c, off_t d, const Holds& mine) {
      if (found) return;
      const Holds others{all.shared - mine.shared, all.exclusive - mine.exclusive};
      if (others.exclusive > 0 || (mode == RangeMode::kExclusive && others.shared > 0)) {
        found = true;
        conflict->found = true;
        conflict->mode = others.exclusive > 0 ? LOCK_EX : LOCK_SH;
        conflict->start = c;
        conflict->length = d == kRangeEnd ? 0 : d - c;
        conflict->pid = CurrentPid();
      }
    });
  });
  return found;
}

Status InodeOf(int fd, InodeKey* key) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::Error(errno);
  *key = {st.st_dev, st.st_ino};
  return Status::Ok();
}

// Records one hold of mode on [start, end) (delta +1/-1) for `where`.
void Record(const Where& where, RangeMode mode, off_t start, off_t end, int delta) {
  if (g_ofd) {
    DescriptorEntry& entry = g_by_fd[where.fd];
    entry.table.Add(start, end, mode, delta);
    return;
  }
  InodeEntry& entry = g_by_inode[where.inode];
  entry.all.Add(start, end, mode, delta);
  RangeTable& own = entry.by_owner[where.fd];
  own.Add(start, end, mode, delta);
  if (own.empty()) entry.by_owner.erase(where.fd);
}

void CountLive(const Where& where, int delta) {
  if (g_ofd) {
    auto it = g_by_fd.find(where.fd);
    if (it == g_by_fd.end()) return;
    // Holds another thread has just recorded keep the entry alive even
    // before that thread counts its lock as live.
    it->second.live += delta;
    if (it->second.live <= 0 && it->second.table.empty() && it->second.pending.empty()) {
      g_by_fd.erase(it);
    }
  } else {
    auto it = g_by_inode.find(where.inode);
    if (it == g_by_inode.end()) return;
    it->second.live += delta;
    if (it->second.live <= 0 && it->second.all.empty()) g_by_inode.erase(it);
  }
}

RangeTable& PendingTable(const Where& where) {
  return g_ofd ? g_by_fd[where.fd].pending : g_by_inode[where.inode].pending;
}

// Sets the kernel to the strongest mode the table wants on each piece of
// [start, end), without waiting: after a failed request, this gives back
// what only that request wanted and keeps what other holds need.
void SyncKernel(const Where& where, off_t start, off_t end) {
  std::vector<Run> runs;
  KernelTable(where).Walk(start, end, [&](off_t a, off_t b, const Holds& holds) {
    AddRun(&runs, a, b, holds.mode());
  });
  for (const Run& run : runs) KernelSet(where.fd, run.mode, run.start, run.end, false);
}

// An in-process conflict (classic backend) is waited for in slices, so the
// caller can run signal handlers in between (EINTR, then call again).
constexpr auto kInProcessSlice = std::chrono::milliseconds(100);

// Whether the lock at `where` is the only live one this process has there
// (its descriptor with OFD locks, its inode with classic ones).
bool OnlyLiveLock(const Where& where) {
  std::lock_guard<std::mutex> hold(g_mutex);
  if (g_ofd) {
    auto it = g_by_fd.find(where.fd);
    return it != g_by_fd.end() && it->second.live == 1;
  }
  auto it = g_by_inode.find(where.inode);
  return it != g_by_inode.end() && it->second.live == 1;
}

// Takes one hold of mode on [start, end) through `where`: checks this
// process's other owners (classic backend), reserves the hold in the table,
// asks the kernel for the bytes whose granted mode must rise, and on failure
// withdraws the reservation. Reserving first means a concurrent release on
// the same descriptor never drops bytes this request relies on, and a
// concurrent request from another owner sees it as a conflict.
Status Take(const Where& where, RangeMode mode, off_t start, off_t end,
            const Deadline& deadline) {
  std::vector<Run> runs;
  {
    std::unique_lock<std::mutex> hold(g_mutex);
    if (!g_ofd) {
      Conflict conflict;
      if (ConflictsInProcess(where, mode, start, end, &conflict)) {
        if (deadline.is_immediate()) return Status::Error(EWOULDBLOCK);
        // Only another thread can end this wait: with no deadline that would
        // be a self-deadlock, which classic locks report as EDEADLK.
        if (deadline.is_never()) return Status::Error(EDEADLK);
        if (deadline.Expired()) return Status::Error(ETIMEDOUT);
        g_released.wait_for(hold, kInProcessSlice);
        if (ConflictsInProcess(where, mode, start, end, &conflict)) {
          return Status::Error(deadline.Expired() ? ETIMEDOUT : EINTR);
        }
      }
    }
    // Ask the kernel only for bytes whose granted mode (the table less the
    // requests still in flight) is below the wanted one.
    RangeTable& table = KernelTable(where);
    const RangeTable& pending = PendingTable(where);
    table.Walk(start, end, [&](off_t a, off_t b, const Holds& holds) {
      pending.Walk(a, b, [&](off_t c, off_t d, const Holds& flying) {
        const Holds granted{holds.shared - flying.shared, holds.exclusive - flying.exclusive};
        if (granted.mode() < mode) AddRun(&runs, c, d, mode);
      });
    });
    if (mode == RangeMode::kExclusive && !runs.empty()) {
      runs = {{start, end, mode}};  // one atomic request for the whole range
    }
    Record(where, mode, start, end, +1);
    if (!runs.empty()) PendingTable(where).Add(start, end, mode, +1);
  }
  Status status = Status::Ok();
  for (const Run& run : runs) {
    status = LockBefore(deadline, [&](bool blocking) {
      return KernelSet(where.fd, run.mode, run.start, run.end, blocking);
    });
    if (!status.ok()) break;
  }
  if (runs.empty()) return status;
  std::lock_guard<std::mutex> hold(g_mutex);
  PendingTable(where).Add(start, end, mode, -1);
  if (!status.ok()) {
    Record(where, mode, start, end, -1);
    SyncKernel(where, start, end);
    if (!g_ofd) g_released.notify_all();
  }
  return status;
}

// Gives back one hold of mode on [start, end): the kernel drops the bytes
// nobody else wants and downgrades those only shared holds still want.
void Give(const Where& where, RangeMode mode, off_t start, off_t end) {
  std::lock_guard<std::mutex> hold(g_mutex);
  Record(where, mode, start, end, -1);
  std::vector<Run> runs;
  KernelTable(where).Walk(start, end, [&](off_t a, off_t b, const Holds& after) {
    Holds before = after;
    (mode == RangeMode::kExclusive ? before.exclusive : before.shared) += 1;
    if (after.mode() != before.mode()) AddRun(&runs, a, b, after.mode());
  });
  for (const Run& run : runs) KernelSet(where.fd, run.mode, run.start, run.end, false);
  if (!g_ofd) {
    InodeEntry& entry = g_by_inode[where.inode];
    if (entry.all.empty()) entry.deferred.clear();  // nothing left to drop
    g_released.notify_all();
  }
}

}  // namespace

bool UsingOfdLocks() { return g_ofd; }

Status RangeEnd(off_t start, off_t length, off_t* end) {
  if (start < 0 || length < 0) return Status::Error(EINVAL);
  if (length == 0) {
    *end = kRangeEnd;
  } else if (start > kRangeEnd - length) {
    return Status::Error(EOVERFLOW);
  } else {
    *end = start + length;
  }
  return Status::Ok();
}

Status FindConflict(int fd, int mode, off_t start, off_t end, Conflict* out) {
  *out = Conflict();
  const RangeMode want = ToRangeMode(mode);
  InodeKey inode;
  Status status = InodeOf(fd, &inode);
  if (!status.ok()) return status;
  if (!g_ofd) {
    std::lock_guard<std::mutex> hold(g_mutex);
    if (ConflictsInProcess({fd, inode}, want, start, end, out)) return status;
  }
  struct flock fl = MakeFlock(KernelType(want), start, end);
#ifdef F_OFD_GETLK
  const int cmd = g_ofd ? F_OFD_GETLK : F_GETLK;
#else
  const int cmd = F_GETLK;
#endif
  if (::fcntl(fd, cmd, &fl) != 0) return Status::Error(errno);
  if (fl.l_type == F_UNLCK) return status;
  out->found = true;
  out->mode = fl.l_type == F_WRLCK ? LOCK_EX : LOCK_SH;
  out->start = fl.l_start;
  out->length = fl.l_len;
  out->pid = fl.l_pid > 0 ? fl.l_pid : -1;
  return status;
}

Status FindConflictAt(const std::string& path, int mode, off_t start, off_t end,
                      Conflict* out) {
  UniqueFd fd;
  if (const Status opened = OpenQueryFile(path, &fd); !opened.ok()) return opened;
  const Status status = FindConflict(fd.get(), mode, start, end, out);
  CloseKeepingLocks(std::move(fd));
  return status;
}

void CloseKeepingLocks(UniqueFd fd) {
  if (g_ofd || !fd.valid()) return;  // fd closes here
  InodeKey inode;
  if (!InodeOf(fd.get(), &inode).ok()) return;
  std::lock_guard<std::mutex> hold(g_mutex);
  auto it = g_by_inode.find(inode);
  if (it != g_by_inode.end() && !it->second.all.empty()) {
    it->second.deferred.push_back(std::move(fd));
  }
}

bool ClassicLocksHeld(dev_t dev, ino_t ino) {
  if (g_ofd) return false;
  std::lock_guard<std::mutex> hold(g_mutex);
  auto it = g_by_inode.find({dev, ino});
  return it != g_by_inode.end() && !it->second.all.empty();
}

bool RangeLock::InOwnerProcess() const { return file_.owner_pid == CurrentPid(); }

namespace {

// LOCK_NB in mode means one non-blocking try, whatever the deadline.
Deadline EffectiveDeadline(int mode, const Deadline& deadline) {
  return (mode & LOCK_NB) != 0 ? Deadline::Now() : deadline;
}

}  // namespace

Status RangeLock::AcquireDescriptor(int fd, int mode, off_t start, off_t end,
                                    const Deadline& requested) {
  Release();
  const Deadline deadline = EffectiveDeadline(mode, requested);
  InodeKey inode;
  Status status = InodeOf(fd, &inode);
  if (!status.ok()) return status;
  start_ = start;
  end_ = end;
  status = Take({fd, inode}, ToRangeMode(mode), start, end, deadline);
  if (!status.ok()) return status;
  {
    std::lock_guard<std::mutex> hold(g_mutex);
    CountLive({fd, inode}, +1);
  }
  file_ = LockedFile();
  file_.fd = fd;
  file_.dev = inode.dev;
  file_.ino = inode.ino;
  file_.owner_pid = CurrentPid();
  mode_ = mode & ~LOCK_NB;
  state_ = State::kHeld;
  return status;
}

Status RangeLock::AcquirePath(const std::string& path, int mode, off_t start,
                              off_t end, const PathOptions& options,
                              const Deadline& requested) {
  Release();
  const Deadline deadline = EffectiveDeadline(mode, requested);
  const RangeMode want = ToRangeMode(mode);
  InodeKey inode{};
  LockedFile file;
  const Status status = LockThroughPath(
      path, options, deadline,
      [&](int fd) {
        const Status found = InodeOf(fd, &inode);
        return found.ok() ? Take({fd, inode}, want, start, end, deadline) : found;
      },
      [&](UniqueFd fd, bool locked) {
        if (locked) Give({fd.get(), inode}, want, start, end);
        CloseKeepingLocks(std::move(fd));
      },
      &file);
  if (!status.ok()) return status;
  {
    std::lock_guard<std::mutex> hold(g_mutex);
    CountLive({file.fd, inode}, +1);
  }
  file_ = std::move(file);
  file_.owner_pid = CurrentPid();
  start_ = start;
  end_ = end;
  mode_ = mode & ~LOCK_NB;
  state_ = State::kHeld;
  return status;
}

void RangeLock::Release() {
  if (state_ == State::kReleased) return;
  const Where where{file_.fd, {file_.dev, file_.ino}};
  if (InOwnerProcess()) {
    Conflict other;
    if (state_ == State::kHeld && file_.options.unlink && file_.owned.valid() &&
        OnlyLiveLock(where) && FindConflict(where.fd, LOCK_EX, 0, kRangeEnd, &other).ok() &&
        !other.found && file_.PathStillNamesIt()) {
      ::unlink(file_.path.c_str());
    }
    if (state_ == State::kHeld) Give(where, ToRangeMode(mode_), start_, end_);
    {
      std::lock_guard<std::mutex> hold(g_mutex);
      CountLive(where, -1);
    }
    CloseKeepingLocks(std::move(file_.owned));
  }
  file_.owned.reset();
  file_.fd = -1;
  state_ = State::kReleased;
}

void RangeLock::Forget() {
  if (state_ != State::kReleased && InOwnerProcess()) {
    std::lock_guard<std::mutex> hold(g_mutex);
    const Where where{file_.fd, {file_.dev, file_.ino}};
    if (state_ == State::kHeld) Record(where, ToRangeMode(mode_), start_, end_, -1);
    CountLive(where, -1);
  }
  file_.owned.release();
  file_.fd = -1;
  state_ = State::kReleased;
}

Status RangeLock::Upgrade(const Deadline& deadline) {
  if (state_ == State::kReleased) return Status::Error(ENOLCK);
  if (state_ == State::kHeld && mode_ == LOCK_EX) return Status::Ok();
  const Where where{file_.fd, {file_.dev, file_.ino}};
  if (state_ == State::kHeld) {
    Status status = Take(where, RangeMode::kExclusive, start_, end_, Deadline::Now());
    if (status.ok()) {
      Give(where, RangeMode::kShared, start_, end_);
      mode_ = LOCK_EX;
      return status;
    }
    if (status.err() != EWOULDBLOCK || deadline.is_immediate()) return status;
    // Waiting while holding our shared bytes could deadlock with another
    // holder doing the same (OFD locks have no deadlock detection), so give
    // them up first, as flock(2) does.
    Give(where, RangeMode::kShared, start_, end_);
    state_ = State::kLost;
  }
  const Status status = Take(where, RangeMode::kExclusive, start_, end_, deadline);
  if (status.ok()) {
    mode_ = LOCK_EX;
    state_ = State::kHeld;
    return status;
  }
  if (mode_ == LOCK_SH && status.err() != EINTR &&
      Take(where, RangeMode::kShared, start_, end_, Deadline::Now()).ok()) {
    state_ = State::kHeld;  // the shared lock is back
  }
  return status;
}

Status RangeLock::Downgrade() {
  if (state_ == State::kReleased) return Status::Error(ENOLCK);
  if (state_ == State::kHeld && mode_ == LOCK_SH) return Status::Ok();
  const Where where{file_.fd, {file_.dev, file_.ino}};
  const Status status = Take(where, RangeMode::kShared, start_, end_,
                             state_ == State::kHeld ? Deadline::Now() : Deadline::Never());
  if (!status.ok()) return status;
  if (state_ == State::kHeld) Give(where, RangeMode::kExclusive, start_, end_);
  mode_ = LOCK_SH;
  state_ = State::kHeld;
  return status;
}

}  // namespace locker
