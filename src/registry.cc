#include "registry.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <new>
#include <utility>

#include "flock_lock.h"
#include "process.h"
#include "wait_timer.h"

#ifndef KCMP_FILE
#define KCMP_FILE 0
#endif

namespace locker {

namespace {

// FILE_LOCKER_NO_OFD follows Perl's truth: unset, "" and "0" are false,
// anything else (even "0.0") asks for classic POSIX locks.
bool DetectOfd() {
#ifdef F_OFD_SETLK
  const char* no_ofd = ::getenv("FILE_LOCKER_NO_OFD");
  return no_ofd == nullptr || *no_ofd == '\0' || ::strcmp(no_ofd, "0") == 0;
#else
  return false;
#endif
}

short KernelType(RangeMode mode) {
  switch (mode) {
    case RangeMode::kExclusive: return F_WRLCK;
    case RangeMode::kShared: return F_RDLCK;
    default: return F_UNLCK;
  }
}

// [start, end) as a struct flock. kRangeEnd (2**63) is the kernel's "to
// the end" (l_len 0), which covers up to and including OFFSET_MAX.
struct flock MakeFlock(short type, Pos start, Pos end) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(start);
  fl.l_len = end == kRangeEnd ? 0 : static_cast<off_t>(end - start);
  return fl;
}

// One fcntl lock request: Ok, or the errno with every "busy" as
// EWOULDBLOCK.
Status KernelSet(bool ofd, int fd, RangeMode mode, Pos start, Pos end, bool wait) {
  struct flock fl = MakeFlock(KernelType(mode), start, end);
#ifdef F_OFD_SETLK
  const int cmd = ofd ? (wait ? F_OFD_SETLKW : F_OFD_SETLK) : (wait ? F_SETLKW : F_SETLK);
#else
  (void)ofd;
  const int cmd = wait ? F_SETLKW : F_SETLK;
#endif
  if (::fcntl(fd, cmd, &fl) == 0) return Status::Ok();
  // fcntl(2) may also say EACCES for a busy lock.
  return Status::Error(errno == EACCES ? EWOULDBLOCK : BusyAsEwouldblock(errno));
}

struct Run {
  Pos start;
  Pos end;
  RangeMode mode;
};

// The runs of one request: most requests make one or two, kept inline so
// the common call allocates nothing; more spill to the heap.
class RunList final {
 public:
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  Run& back() { return at(size_ - 1); }
  const Run& operator[](size_t i) const { return size_ <= kInline ? inline_[i] : more_[i]; }
  void push_back(const Run& run) {
    if (size_ == kInline) more_.assign(inline_, inline_ + kInline);
    if (size_ < kInline) {
      inline_[size_] = run;
    } else {
      more_.push_back(run);
    }
    ++size_;
  }
  const Run* begin() const { return size_ <= kInline ? inline_ : more_.data(); }
  const Run* end() const { return begin() + size_; }

 private:
  static constexpr size_t kInline = 4;
  Run& at(size_t i) { return size_ <= kInline ? inline_[i] : more_[i]; }
  Run inline_[kInline];
  std::vector<Run> more_;  // every run, once there are more than kInline
  size_t size_ = 0;
};

// Appends [from, to) in mode, merging with an adjacent run of equal mode.
void AddRun(RunList* runs, Pos from, Pos to, RangeMode mode) {
  if (!runs->empty() && runs->back().end == from && runs->back().mode == mode) {
    runs->back().end = to;
  } else {
    runs->push_back({from, to, mode});
  }
}

// What to ask the kernel for a hold of mode on [start, end), given the
// holds the kernel was granted (table): every byte, in the strongest mode
// wanted there -- the record never stands in for the kernel's answer.
RunList WantedRuns(const RangeTable& table, RangeMode mode, Pos start, Pos end) {
  RunList runs;
  table.Walk(start, end, [&](Pos a, Pos b, const Holds& holds) {
    AddRun(&runs, a, b, std::max(holds.mode(), mode));
  });
  return runs;
}

Status InodeOf(int fd, InodeKey* key) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::Error(errno);
  *key = {st.st_dev, st.st_ino};
  return Status::Ok();
}

// Without kcmp: whether a and b share one OFD, told by its status flags,
// which belong to the OFD: flip O_NONBLOCK through b and look through a.
// Only for regular files and directories, where O_NONBLOCK changes nothing
// for anyone's I/O meanwhile. Requires mutex_ (one flip at a time).
bool SameFileByFlags(int a, int b) {
  struct stat st;
  if (::fstat(a, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) return false;
  const int fa = ::fcntl(a, F_GETFL);
  const int fb = ::fcntl(b, F_GETFL);
  if (fa < 0 || fb < 0 || ((fa ^ fb) & O_NONBLOCK) != 0) return false;
  if (::fcntl(b, F_SETFL, fb ^ O_NONBLOCK) != 0) return false;
  const int after = ::fcntl(a, F_GETFL);
  ::fcntl(b, F_SETFL, fb);
  return after >= 0 && ((after ^ fa) & O_NONBLOCK) != 0;
}

}  // namespace

// kcmp(2) cannot answer on kernels built without it or under some seccomp
// filters.
int SameFile(int a, int b) {
  const pid_t pid = ::getpid();
  const long rc = ::syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b);
  return rc < 0 ? -1 : rc == 0;
}

Registry& Registry::Get() {
  // Never destroyed: locks may be released during global destruction.
  static Registry* const registry = new Registry();
  return *registry;
}

Registry::Registry() : ofd_(DetectOfd()) {
  ::pthread_atfork(PrepareFork, ParentAfterFork, ChildAfterFork);
}

// A forked child must not inherit a mutex another thread held at the fork.
void Registry::PrepareFork() { Get().mutex_.lock(); }
void Registry::ParentAfterFork() { Get().mutex_.unlock(); }

// The child holds none of the parent's locks: every Description becomes
// inherited (nothing held, never matched again; the child's copies of the
// locks only let go of it), and the idle descriptors close, which is safe
// because the child holds no classic locks yet.
void Registry::ChildAfterFork() {
  Registry& self = Get();
  self.mutex_.unlock();
  for (Description* desc = self.live_; desc != nullptr; desc = desc->next) {
    desc->inherited = true;
    desc->ranges = RangeTable();
    desc->pending = RangeTable();
    desc->whole = Holds();
    desc->whole_lost = false;
    desc->whole_inflight = 0;
  }
  self.inodes_.clear();
  self.unindexed_ = nullptr;
}

// Requires mutex_. A Description of fd with one reference, on the live
// list: the spare if there is one.
Description* Registry::NewLinked(UniqueFd fd) {
  Description* const desc = spare_ ? spare_.release() : new Description();
  desc->fd = std::move(fd);
  desc->refs = 1;
  desc->next = live_;
  if (live_ != nullptr) live_->prev = desc;
  live_ = desc;
  return desc;
}

// Requires mutex_. Takes desc (no references left, fd already dealt with by
// Retire) off the live list, then keeps it cleared as the spare or frees it.
void Registry::Recycle(Description* desc) {
  (desc->prev != nullptr ? desc->prev->next : live_) = desc->next;
  if (desc->next != nullptr) desc->next->prev = desc->prev;
  if (spare_) {
    delete desc;
    return;
  }
  // Destroyed (closing a descriptor Retire left to close) and made anew in
  // place: cheaper than assigning a fresh one, and nothing is left over.
  desc->~Description();
  spare_.reset(new (desc) Description());
}

Description* Registry::NewDescription(UniqueFd fd, const InodeKey& inode,
                                      bool writable) {
  Description* const desc = NewLinked(std::move(fd));
  desc->inode = inode;
  desc->writable = writable;
  inodes_[inode].descriptions.push_back(desc);
  return desc;
}

// Requires mutex_. Lists desc under its inode, asking the kernel which it
// is. A descriptor of ours that fstat cannot name stays unindexed (Match
// still compares against it).
void Registry::Index(Description* desc) {
  if (desc->indexed) return;
  InodeKey inode;
  if (!InodeOf(desc->fd.get(), &inode).ok()) return;
  desc->inode = inode;
  desc->indexed = true;
  inodes_[inode].descriptions.push_back(desc);
  if (unindexed_ == desc) unindexed_ = nullptr;
}

InodeKey Registry::FileOf(Description* desc) {
  std::lock_guard<std::mutex> hold(mutex_);
  Index(desc);
  return desc->inode;
}

// Requires mutex_. The live Description of fd's OFD, or nullptr.
Description* Registry::Match(int fd, const InodeKey& inode) const {
  if (unindexed_ != nullptr && SameFile(fd, unindexed_->fd.get()) == 1) return unindexed_;
  auto it = inodes_.find(inode);
  if (it == inodes_.end()) return nullptr;
  for (Description* desc : it->second.descriptions) {
    int same = SameFile(fd, desc->fd.get());
    if (same < 0) same = SameFileByFlags(fd, desc->fd.get());
    if (same == 1) return desc;
  }
  return nullptr;
}

// AdoptAndTake's adoption, then then(*out) in the same hold of the mutex;
// its answer is the call's, and *out stays set when then fails.
template <typename Then>
Status Registry::AdoptThen(int fd, Description** out, Then&& then) {
  if (ofd_) {
    // With no other live Description there is nothing to match fd against
    // and no classic lock to mind: the duplicate is all it takes, and the
    // inode is asked for only once something needs it.
    std::lock_guard<std::mutex> hold(mutex_);
    if (inodes_.empty() && unindexed_ == nullptr) {
      UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
      if (!dup.valid()) return Status::Error(errno);
      Description* const desc = NewLinked(std::move(dup));
      desc->adopted = true;
      desc->indexed = false;
      unindexed_ = desc;
      *out = desc;
      return then(desc);
    }
  }
  InodeKey inode;
  const Status status = InodeOf(fd, &inode);
  if (!status.ok()) return status;
  std::lock_guard<std::mutex> hold(mutex_);
  if (Description* desc = Match(fd, inode)) {
    ++desc->refs;
    *out = desc;
    return then(desc);
  }
  // Classic fallback: a duplicate kept idle for this very OFD serves again,
  // so repeated calls on one handle cannot pile descriptors up.
  UniqueFd dup;
  auto it = inodes_.find(inode);
  if (it != inodes_.end()) {
    auto& idle = it->second.idle;
    for (auto i = idle.begin(); i != idle.end(); ++i) {
      int same = SameFile(fd, i->fd.get());
      if (same < 0) same = SameFileByFlags(fd, i->fd.get());
      if (same == 1) {
        dup = std::move(i->fd);
        idle.erase(i);
        break;
      }
    }
  }
  if (!dup.valid()) dup.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!dup.valid()) return Status::Error(errno);
  *out = NewDescription(std::move(dup), inode, false);
  (*out)->adopted = true;
  return then(*out);
}

Status Registry::AdoptAndTake(int fd, bool whole, RangeMode mode, Pos start, Pos end,
                              const Deadline& deadline, Description** out) {
  bool wait = false;
  const Status status = AdoptThen(fd, out, [&](Description* desc) {
    return whole ? TryWhole(desc, mode, deadline, &wait)
                 : TryRange(desc, mode, start, end, deadline, &wait);
  });
  if (!wait) return status;
  return whole ? WaitWhole(*out, mode, deadline) : WaitRange(*out, mode, start, end, deadline);
}

Status Registry::Open(const std::string& path, const PathOptions& options,
                      const Deadline& deadline, Description** out) {
  if (!ofd_) {
    // Reuse a descriptor kept idle for the inode PATH names, so repeated
    // calls cannot pile up descriptors that may not be closed.
    struct stat st;
    const int rc = options.follow_symlinks ? ::stat(path.c_str(), &st)
                                           : ::lstat(path.c_str(), &st);
    if (rc == 0) {
      std::lock_guard<std::mutex> hold(mutex_);
      const InodeKey inode{st.st_dev, st.st_ino};
      auto it = inodes_.find(inode);
      if (it != inodes_.end()) {
        auto& idle = it->second.idle;
        for (auto i = idle.begin(); i != idle.end(); ++i) {
          if (i->reusable && (i->writable || !options.need_write)) {
            UniqueFd fd = std::move(i->fd);
            const bool writable = i->writable;
            idle.erase(i);
            *out = NewDescription(std::move(fd), inode, writable);
            return Status::Ok();
          }
        }
      }
    }
  }
  UniqueFd fd;
  bool writable = false;
  Status status = OpenLockFile(path, options, &fd, &writable, deadline);
  if (!status.ok()) return status;
  InodeKey inode;
  status = InodeOf(fd.get(), &inode);
  std::lock_guard<std::mutex> hold(mutex_);
  if (!status.ok()) {
    Close(std::move(fd), inode, writable, true);
    return status;
  }
  *out = NewDescription(std::move(fd), inode, writable);
  return status;
}

// Requires mutex_. Closes fd, or keeps it idle while this process holds
// classic locks on the inode (closing any descriptor of it would drop them).
void Registry::Close(UniqueFd fd, const InodeKey& inode, bool writable, bool reusable) {
  if (ofd_ || !fd.valid()) return;  // fd closes here
  auto it = inodes_.find(inode);
  if (it == inodes_.end() || it->second.all.empty()) return;
  it->second.idle.push_back({std::move(fd), writable, reusable});
}

// Requires mutex_. Forgets the inode once nothing refers to it.
void Registry::DropIfUnused(const InodeKey& key) {
  auto it = inodes_.find(key);
  if (it == inodes_.end()) return;
  Inode& inode = it->second;
  if (inode.all.empty()) inode.idle.clear();  // nothing left to drop
  if (inode.descriptions.empty() && inode.all.empty() && inode.pending.empty() &&
      inode.idle.empty()) {
    inodes_.erase(it);
  }
}

void Registry::Unref(Description* desc) {
  std::lock_guard<std::mutex> hold(mutex_);
  UnrefLocked(desc);
}

Status Registry::GiveAndUnref(Description* desc, bool whole, RangeMode mode, Pos start,
                              Pos end) {
  std::lock_guard<std::mutex> hold(mutex_);
  const Status status = whole ? LowerWhole(desc, mode) : Lower(desc, mode, start, end);
  UnrefLocked(desc);
  return status;
}

// Requires mutex_.
void Registry::UnrefLocked(Description* desc) {
  if (--desc->refs > 0) return;
  Retire(desc);
  Recycle(desc);
}

// Requires mutex_. Lets go of the descriptor of desc, which has no
// references left: closed (by Recycle), or kept idle.
void Registry::Retire(Description* desc) {
  if (desc->inherited) {
    // A copy from the parent: this process (the child) may hold classic
    // locks of its own on the inode, which its close would drop. The
    // descriptor shares the parent's OFD, so it is never reused.
    if (!ofd_) {
      auto it = inodes_.find(desc->inode);
      if (it != inodes_.end() && !it->second.all.empty()) {
        it->second.idle.push_back({std::move(desc->fd), desc->writable, false});
      }
    }
    return;
  }
  if (!desc->indexed) {  // OFD locks only: nothing kept, the descriptor closes
    if (unindexed_ == desc) unindexed_ = nullptr;
    return;
  }
  auto it = inodes_.find(desc->inode);
  if (it != inodes_.end()) {
    it->second.descriptions.remove(desc);
    // A duplicate of a caller's descriptor shares the caller's OFD: kept
    // idle, it must never be handed out again as a fresh one.
    Close(std::move(desc->fd), desc->inode, desc->writable, !desc->adopted);
    DropIfUnused(desc->inode);
  }
}

RangeTable& Registry::KernelTable(Description* desc) {
  return ofd_ ? desc->ranges : inodes_[desc->inode].all;
}

RangeTable& Registry::PendingTable(Description* desc) {
  return ofd_ ? desc->pending : inodes_[desc->inode].pending;
}

// Requires mutex_.
void Registry::Record(Description* desc, RangeMode mode, Pos start, Pos end, int delta) {
  desc->ranges.Add(start, end, mode, delta);
  if (!ofd_) inodes_[desc->inode].all.Add(start, end, mode, delta);
}

// Requires mutex_. Whether an owner in this process other than `except`
// (a Description of the inode; nullptr: every owner counts) holds bytes of
// [start, end) in a mode that conflicts with mode (classic backend only).
bool Registry::ConflictsInProcess(const InodeKey& inode, const Description* except,
                                  RangeMode mode, Pos start, Pos end,
                                  Conflict* out) const {
  auto it = inodes_.find(inode);
  if (it == inodes_.end()) return false;
  bool found = false;
  for (const Description* other : it->second.descriptions) {
    if (other == except || found) continue;
    other->ranges.Walk(start, end, [&](Pos a, Pos b, const Holds& theirs) {
      if (found) return;
      if (theirs.exclusive > 0 || (mode == RangeMode::kExclusive && theirs.shared > 0)) {
        found = true;
        out->found = true;
        out->mode = theirs.exclusive > 0 ? LOCK_EX : LOCK_SH;
        out->start = a;
        out->length = b == kRangeEnd ? 0 : b - a;
        out->pid = CurrentPid();
      }
    });
  }
  return found;
}

// Requires mutex_. Sets each run in the kernel without waiting: every run
// is tried, and the first refusal is returned.
template <typename Runs>
Status Registry::SetRuns(Description* desc, const Runs& runs) {
  Status first = Status::Ok();
  for (const Run& run : runs) {
    const Status status = KernelSet(ofd_, desc->fd.get(), run.mode, run.start, run.end, false);
    if (first.ok()) first = status;
  }
  return first;
}

// Requires mutex_. Sets the kernel to the strongest mode the holds want on
// each piece of [start, end), without waiting. Every piece is tried; the
// first refusal is returned.
Status Registry::SyncKernel(Description* desc, Pos start, Pos end) {
  RunList runs;
  KernelTable(desc).Walk(start, end, [&](Pos a, Pos b, const Holds& holds) {
    AddRun(&runs, a, b, holds.mode());
  });
  return SetRuns(desc, runs);
}

// An in-process wait (another owner's conflicting hold in the classic
// backend, or another request of this process on the same bytes still at
// the kernel) lasts at most this long, so the caller can run signal handlers
// in between (EINTR, then call again).
constexpr auto kInProcessSlice = std::chrono::milliseconds(100);

// The end of one in-process wait: a slice from now, or the deadline if
// sooner.
std::chrono::steady_clock::time_point SliceEnd(const Deadline& deadline) {
  const auto slice = std::chrono::steady_clock::now() + kInProcessSlice;
  if (deadline.is_never()) return slice;
  // steady_clock is CLOCK_MONOTONIC, the deadline's clock.
  const std::chrono::steady_clock::time_point when(
      std::chrono::seconds(deadline.when().tv_sec) +
      std::chrono::nanoseconds(deadline.when().tv_nsec));
  return std::min(slice, when);
}

// Requires mutex_, held by `hold`. Waits (one slice at most) until busy()
// is false: Ok then; EWOULDBLOCK for an immediate deadline; ETIMEDOUT once
// the deadline has passed; EINTR at the end of a slice (run handlers, call
// again).
template <typename Busy>
Status Registry::WaitInProcess(std::unique_lock<std::mutex>* hold,
                               const Deadline& deadline, Busy&& busy) {
  if (!busy()) return Status::Ok();
  if (deadline.is_immediate()) return Status::Error(EWOULDBLOCK);
  if (deadline.Expired()) return Status::Error(ETIMEDOUT);
  if (released_.wait_until(*hold, SliceEnd(deadline), [&] { return !busy(); })) {
    return Status::Ok();
  }
  return Status::Error(deadline.Expired() ? ETIMEDOUT : EINTR);
}

// The fast path: one mutex section, with the kernel asked without waiting
// while the mutex is held, so no other request of this process can come
// between the decision and the grant and nothing needs to be marked as in
// flight. A request that would have to wait (for the kernel, for another
// request on these bytes, or for another owner here) goes on in
// TakeRangeWaiting, after the bytes it was granted are set back.
// Requires mutex_. Whether another request of this process on bytes of
// [start, end) of desc's OFD (classic: of the inode) is still at the kernel.
bool Registry::InFlight(Description* desc, Pos start, Pos end) {
  bool busy = false;
  PendingTable(desc).Walk(start, end, [&](Pos, Pos, const Holds& flying) {
    busy = busy || flying != Holds();
  });
  return busy;
}

// Requires mutex_. Sets the first `granted` runs back to what the record
// wants, undoing a request that was refused after them.
template <typename Runs>
Status Registry::SetBack(Description* desc, const Runs& runs, size_t granted) {
  Status first = Status::Ok();
  for (size_t i = 0; i < granted; ++i) {
    const Status status = SyncKernel(desc, runs[i].start, runs[i].end);
    if (first.ok()) first = status;
  }
  return first;
}

Status Registry::TakeRange(Description* desc, RangeMode mode, Pos start, Pos end,
                           const Deadline& deadline) {
  bool wait = false;
  {
    std::lock_guard<std::mutex> hold(mutex_);
    const Status status = TryRange(desc, mode, start, end, deadline, &wait);
    if (!wait) return status;
  }
  return WaitRange(desc, mode, start, end, deadline);
}

// Requires mutex_. TakeRange's fast path: when nothing of this process's is
// in the way, one try at the kernel without waiting. Sets *wait when the
// request must go on to WaitRange.
Status Registry::TryRange(Description* desc, RangeMode mode, Pos start, Pos end,
                          const Deadline& deadline, bool* wait) {
  Conflict conflict;
  const bool owner_here =
      !ofd_ && ConflictsInProcess(desc->inode, desc, mode, start, end, &conflict);
  if (owner_here && deadline.is_never()) return Status::Error(EDEADLK);
  if (!owner_here && !InFlight(desc, start, end)) {
    const RunList runs = WantedRuns(KernelTable(desc), mode, start, end);
    Status status = Status::Ok();
    size_t granted = 0;
    for (const Run& run : runs) {
      status = KernelSet(ofd_, desc->fd.get(), run.mode, run.start, run.end, false);
      if (!status.ok()) break;
      ++granted;
    }
    if (status.ok()) {
      Record(desc, mode, start, end, +1);
      return status;
    }
    // The record is still what was granted before: setting the granted
    // runs back to it undoes this request exactly. Setting back only
    // lowers; if the kernel refuses, it keeps more than the record, never
    // less, and the request's own error is the one to report.
    (void)SetBack(desc, runs, granted);
    if (status.err() != EWOULDBLOCK || deadline.is_immediate()) return status;
  }
  *wait = true;
  return Status::Error(EWOULDBLOCK);
}

// TakeRange's wait. EWOULDBLOCK from a wait with a bound or none is a grant
// that could not be settled (see TakeRangeWaiting): never an answer before
// the deadline.
Status Registry::WaitRange(Description* desc, RangeMode mode, Pos start, Pos end,
                           const Deadline& deadline) {
  for (;;) {
    const Status status = TakeRangeWaiting(desc, mode, start, end, deadline);
    if (status.err() != EWOULDBLOCK || deadline.is_immediate()) return status;
    if (deadline.Expired()) return Status::Error(ETIMEDOUT);
  }
}

Status Registry::TakeRangeWaiting(Description* desc, RangeMode mode, Pos start, Pos end,
                                  const Deadline& deadline) {
  RunList runs;
  unsigned long gives_before;
  {
    std::unique_lock<std::mutex> hold(mutex_);
    // Classic locks: another owner in this process holding conflicting
    // bytes is a conflict the kernel cannot see. Only another thread can
    // end that wait: with no deadline it would be a self-deadlock, which
    // classic locks report as EDEADLK.
    Conflict conflict;
    auto conflicts = [&] {
      return !ofd_ && ConflictsInProcess(desc->inode, desc, mode, start, end, &conflict);
    };
    if (deadline.is_never() && conflicts()) return Status::Error(EDEADLK);
    // And one request at a time on any byte of one OFD (classic: of the
    // process) may be at the kernel: a request decided before another was
    // granted would, granted after it, set the bytes to a mode decided
    // without it -- a shared grant landing on bytes just made exclusive
    // would lower them under the exclusive guard.
    const Status turn = WaitInProcess(
        &hold, deadline, [&] { return InFlight(desc, start, end) || conflicts(); });
    if (!turn.ok()) return turn;
    // No other request on these bytes is in flight now, so the record is
    // what was granted.
    runs = WantedRuns(KernelTable(desc), mode, start, end);
    Record(desc, mode, start, end, +1);
    PendingTable(desc).Add(start, end, mode, +1);
    gives_before = gives_;
  }
  Status status = Status::Ok();
  size_t granted = 0;  // runs the kernel granted
  for (const Run& run : runs) {
    status = LockBefore(deadline, [&](bool blocking) {
      return KernelSet(ofd_, desc->fd.get(), run.mode, run.start, run.end, blocking);
    });
    if (!status.ok()) break;
    ++granted;
  }
  std::lock_guard<std::mutex> hold(mutex_);
  PendingTable(desc).Add(start, end, mode, -1);
  released_.notify_all();
  if (status.ok() && gives_ != gives_before) {
    // A hold given back meanwhile may have lowered bytes this request
    // asked for again in a stronger mode: settle on what is wanted now.
    // Raising them without waiting may be refused (another process took
    // them in between): then this request is not granted, and TakeRange
    // goes round again.
    status = SyncKernel(desc, start, end);
  }
  if (!status.ok()) {
    Record(desc, mode, start, end, -1);
    // A refused request changed nothing in the kernel: only the runs it was
    // granted before are set back, so locks the OFD holds that the record
    // does not know (taken with fcntl(2) directly) are left alone -- unless
    // a hold given back meanwhile set bytes to a mode only this request
    // wanted: then the whole range is settled on what is wanted now. What
    // is wanted now was held before this request, so this only lowers: a
    // refusal leaves the kernel holding more than the record, never less,
    // and the request's own error is the one to report.
    (void)(gives_ != gives_before ? SyncKernel(desc, start, end)
                                  : SetBack(desc, runs, granted));
  }
  return status;
}

Status Registry::GiveRange(Description* desc, RangeMode mode, Pos start, Pos end) {
  std::lock_guard<std::mutex> hold(mutex_);
  return Lower(desc, mode, start, end);
}

Status Registry::DowngradeRange(Description* desc, Pos start, Pos end) {
  std::lock_guard<std::mutex> hold(mutex_);
  Record(desc, RangeMode::kShared, start, end, +1);
  return Lower(desc, RangeMode::kExclusive, start, end);
}

// Requires mutex_. Withdraws one hold of mode on [start, end) and lowers
// the kernel's mode where the remaining holds want less. Only ever lowers,
// so it needs no turn at the kernel: whatever a request still in flight was
// decided as, it wants at least what it will set.
Status Registry::Lower(Description* desc, RangeMode mode, Pos start, Pos end) {
  Record(desc, mode, start, end, -1);
  ++gives_;
  RunList runs;
  KernelTable(desc).Walk(start, end, [&](Pos a, Pos b, const Holds& after) {
    Holds before = after;
    before.Add(mode, +1);
    if (after.mode() != before.mode()) AddRun(&runs, a, b, after.mode());
  });
  const Status status = SetRuns(desc, runs);
  if (!ofd_) {
    DropIfUnused(desc->inode);
    released_.notify_all();
  }
  return status;
}

namespace {

int FlockOperation(RangeMode mode) {
  switch (mode) {
    case RangeMode::kExclusive: return LOCK_EX;
    case RangeMode::kShared: return LOCK_SH;
    default: return LOCK_UN;
  }
}

}  // namespace

Status Registry::TakeWhole(Description* desc, RangeMode mode, const Deadline& deadline) {
  bool wait = false;
  {
    std::lock_guard<std::mutex> hold(mutex_);
    const Status status = TryWhole(desc, mode, deadline, &wait);
    if (!wait) return status;
  }
  return WaitWhole(desc, mode, deadline);
}

// Requires mutex_. The fast path, as for ranges: on an OFD that holds no
// whole-file lock and has no request at the kernel, one try without
// waiting, which cannot drop anything when it fails. Sets *wait when the
// request must go on to WaitWhole.
Status Registry::TryWhole(Description* desc, RangeMode mode, const Deadline& deadline,
                          bool* wait) {
  if (desc->whole_inflight == 0 && desc->whole.mode() == RangeMode::kNone) {
    if (::flock(desc->fd.get(), FlockOperation(mode) | LOCK_NB) == 0) {
      desc->whole.Add(mode, +1);
      desc->whole_lost = false;
      return Status::Ok();
    }
    const int err = BusyAsEwouldblock(errno);
    if (err != EWOULDBLOCK || deadline.is_immediate()) return Status::Error(err);
  }
  *wait = true;
  return Status::Error(EWOULDBLOCK);
}

// TakeWhole's wait.
Status Registry::WaitWhole(Description* desc, RangeMode mode, const Deadline& deadline) {
  RangeMode want;
  {
    std::unique_lock<std::mutex> hold(mutex_);
    // As for ranges: one whole-file request per OFD at the kernel at a time.
    const Status turn =
        WaitInProcess(&hold, deadline, [&] { return desc->whole_inflight > 0; });
    if (!turn.ok()) return turn;
    want = std::max(desc->whole.mode(), mode);
    desc->whole.Add(mode, +1);
    ++desc->whole_inflight;
  }
  // Always asked: flock(2) answers at once when the OFD holds that mode.
  const Status status = Flock(desc->fd.get(), FlockOperation(want), deadline);
  std::lock_guard<std::mutex> hold(mutex_);
  --desc->whole_inflight;
  released_.notify_all();
  if (status.ok()) {
    desc->whole_lost = false;
    return status;
  }
  desc->whole.Add(mode, -1);
  // A failed conversion may have dropped what the OFD held: take it back
  // without waiting, or say it is lost. After EINTR the caller runs signal
  // handlers and asks again (or a handler dies): until then it is lost.
  const RangeMode rest = desc->whole.mode();
  desc->whole_lost = rest != RangeMode::kNone &&
                     (status.err() == EINTR ||
                      ::flock(desc->fd.get(), FlockOperation(rest) | LOCK_NB) != 0);
  return status;
}

Status Registry::GiveWhole(Description* desc, RangeMode mode) {
  std::lock_guard<std::mutex> hold(mutex_);
  return LowerWhole(desc, mode);
}

Status Registry::DowngradeWhole(Description* desc) {
  std::lock_guard<std::mutex> hold(mutex_);
  desc->whole.Add(RangeMode::kShared, +1);
  return LowerWhole(desc, RangeMode::kExclusive);
}

// Requires mutex_. As Lower, for the whole-file hold. A conversion flock(2)
// refuses is not an error here: it sets whole_lost, which held() reports.
Status Registry::LowerWhole(Description* desc, RangeMode mode) {
  const RangeMode before = desc->whole.mode();
  desc->whole.Add(mode, -1);
  const RangeMode after = desc->whole.mode();
  if (after == RangeMode::kNone) {
    desc->whole_lost = false;
    // Explicitly: a forked child may share the OFD, so closing our
    // descriptor alone would not end the lock.
    if (::flock(desc->fd.get(), LOCK_UN) != 0) return Status::Error(errno);
  } else if (after != before || desc->whole_lost) {
    desc->whole_lost = ::flock(desc->fd.get(), FlockOperation(after) | LOCK_NB) != 0;
  }
  return Status::Ok();
}

void Registry::Forget(Description* desc, bool whole, RangeMode mode, Pos start,
                      Pos end) {
  std::lock_guard<std::mutex> hold(mutex_);
  if (whole) {
    desc->whole.Add(mode, -1);
  } else {
    Record(desc, mode, start, end, -1);
    if (!ofd_) DropIfUnused(desc->inode);
  }
}

void Registry::MarkShared(Description* desc) {
  std::lock_guard<std::mutex> hold(mutex_);
  desc->adopted = true;
}

bool Registry::WholeLost(const Description* desc) {
  std::lock_guard<std::mutex> hold(mutex_);
  return desc->whole_lost;
}

bool Registry::OnlyUser(Description* desc) {
  std::lock_guard<std::mutex> hold(mutex_);
  Index(desc);
  auto it = inodes_.find(desc->inode);
  return desc->refs == 1 &&
         (it == inodes_.end() || it->second.descriptions.size() == 1);
}

// Requires mutex_ when fd belongs to the registry. The kernel's answer
// through fd (whose own OFD's locks, or this process's classic ones, it
// does not report).
Status Registry::KernelConflict(int fd, RangeMode mode, Pos start, Pos end,
                                Conflict* out) const {
  struct flock fl = MakeFlock(KernelType(mode), start, end);
#ifdef F_OFD_GETLK
  const int cmd = ofd_ ? F_OFD_GETLK : F_GETLK;
#else
  const int cmd = F_GETLK;
#endif
  if (::fcntl(fd, cmd, &fl) != 0) return Status::Error(errno);
  if (fl.l_type == F_UNLCK) return Status::Ok();
  out->found = true;
  out->mode = fl.l_type == F_WRLCK ? LOCK_EX : LOCK_SH;
  out->start = static_cast<Pos>(fl.l_start);
  out->length = static_cast<Pos>(fl.l_len);
  out->pid = fl.l_pid > 0 ? fl.l_pid : -1;
  return Status::Ok();
}

Status Registry::FindConflict(int fd, RangeMode mode, Pos start, Pos end, Conflict* out,
                              const Description* except) {
  *out = Conflict();
  if (!ofd_) {
    InodeKey inode;
    const Status status = InodeOf(fd, &inode);
    if (!status.ok()) return status;
    std::lock_guard<std::mutex> hold(mutex_);
    // The OFD asked through is an owner too: its own holds never conflict.
    if (except == nullptr) except = Match(fd, inode);
    if (ConflictsInProcess(inode, except, mode, start, end, out)) return status;
  }
  return KernelConflict(fd, mode, start, end, out);
}

Status Registry::FindConflictAt(const std::string& path, RangeMode mode, Pos start,
                                Pos end, Conflict* out) {
  *out = Conflict();
  if (!ofd_) {
    // Ask through a descriptor the registry already has for the inode, so
    // no new one must be kept open afterwards.
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      const InodeKey inode{st.st_dev, st.st_ino};
      std::lock_guard<std::mutex> hold(mutex_);
      auto it = inodes_.find(inode);
      if (it != inodes_.end()) {
        int fd = -1;
        if (!it->second.descriptions.empty()) {
          fd = it->second.descriptions.front()->fd.get();
        } else if (!it->second.idle.empty()) {
          fd = it->second.idle.front().fd.get();
        }
        if (fd >= 0) {
          if (ConflictsInProcess(inode, nullptr, mode, start, end, out)) return Status::Ok();
          return KernelConflict(fd, mode, start, end, out);
        }
      }
    }
  }
  UniqueFd fd;
  if (const Status opened = OpenQueryFile(path, &fd); !opened.ok()) return opened;
  const Status status = FindConflict(fd.get(), mode, start, end, out);
  InodeKey inode;
  if (!ofd_ && InodeOf(fd.get(), &inode).ok()) {
    std::lock_guard<std::mutex> hold(mutex_);
    Close(std::move(fd), inode, false, true);
  }
  return status;
}

bool Registry::ClassicLocksHeld(const InodeKey& inode) {
  if (ofd_) return false;
  std::lock_guard<std::mutex> hold(mutex_);
  auto it = inodes_.find(inode);
  return it != inodes_.end() && !it->second.all.empty();
}

size_t Registry::IdleDescriptors(const InodeKey& inode) {
  std::lock_guard<std::mutex> hold(mutex_);
  auto it = inodes_.find(inode);
  return it == inodes_.end() ? 0 : it->second.idle.size();
}

}  // namespace locker
