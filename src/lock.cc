#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "coherence.h"
#include "holders.h"
#include "process.h"

namespace locker {

namespace {

RangeMode ToRangeMode(int mode) {
  return (mode & ~LOCK_NB) == LOCK_EX ? RangeMode::kExclusive : RangeMode::kShared;
}

Registry& registry() { return Registry::Get(); }

}  // namespace

bool UsingOfdLocks() { return registry().ofd(); }

Status RangeEnd(off_t start, off_t length, Pos* end) {
  if (start < 0 || length < 0) return Status::Error(EINVAL);
  if (length == 0) {
    *end = kRangeEnd;
    return Status::Ok();
  }
  const Pos last_end = static_cast<Pos>(start) + static_cast<Pos>(length);
  if (last_end > kRangeEnd) return Status::Error(EOVERFLOW);
  *end = last_end;
  return Status::Ok();
}

Status FindConflict(int fd, int mode, Pos start, Pos end, Conflict* out) {
  return registry().FindConflict(fd, ToRangeMode(mode), start, end, out);
}

Status FindConflictAt(const std::string& path, int mode, Pos start, Pos end,
                      Conflict* out) {
  return registry().FindConflictAt(path, ToRangeMode(mode), start, end, out);
}

bool ClassicLocksHeld(const InodeKey& inode) {
  return registry().ClassicLocksHeld(inode);
}

bool SameOpenFile(int a, int b) { return SameFile(a, b) == 1; }

Lock::Lock(Lock&& other) noexcept { *this = std::move(other); }

Lock& Lock::operator=(Lock&& other) noexcept {
  if (this == &other) return *this;
  Release();
  state_ = std::exchange(other.state_, State::kReleased);
  whole_ = other.whole_;
  mode_ = other.mode_;
  start_ = other.start_;
  end_ = other.end_;
  desc_ = std::exchange(other.desc_, nullptr);
  owner_pid_ = other.owner_pid_;
  path_ = std::move(other.path_);
  options_ = other.options_;
  coherent_ = other.coherent_;
  other.path_.clear();
  return *this;
}

bool Lock::InOwnerProcess() const { return owner_pid_ == CurrentPid(); }

namespace {

// Reads the whole of a /proc file into *text; false if it cannot be opened.
bool ReadProcFile(const char* name, std::string* text) {
  UniqueFd file(::open(name, O_RDONLY | O_CLOEXEC));
  if (!file.valid()) return false;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(file.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text->append(buf, static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

bool Lock::KernelHolds() const {
  if (state_ != State::kHeld || desc_ == nullptr) return false;
  // The locks at least as strong as this one, as the kernel lists them.
  std::vector<std::pair<Pos, Pos>> covered;
  bool any = false;
  auto take = [&](const LockLine& lock) {
    if (mode_ == LOCK_EX && lock.mode != LOCK_EX) return;
    any = true;
    const Pos from = static_cast<Pos>(lock.start);
    covered.emplace_back(from, lock.length == 0 ? kRangeEnd : from + static_cast<Pos>(lock.length));
  };
  if (!whole_ && !registry().ofd()) {
    // Classic locks belong to the process, merged across its descriptors:
    // /proc/locks has them by pid and inode.
    std::string text;
    if (LiveProc().ReadLocks(&text) != 0) return true;  // the record stands
    const InodeKey file = inode();
    const pid_t pid = CurrentPid();
    ForEachLockLine(text, "", [&](const LockLine& lock) {
      if (lock.kind == "posix" && !lock.waiting && lock.pid == pid && lock.ino == file.ino &&
          lock.dev_major == major(file.dev) && lock.dev_minor == minor(file.dev)) {
        take(lock);
      }
    });
  } else {
    // Lines "lock:\t1: OFDLCK ADVISORY WRITE -1 fe:00:123 0 99", as in
    // /proc/locks but for this open file description only.
    char name[64];
    ::snprintf(name, sizeof name, "/proc/self/fdinfo/%d", desc_->fd.get());
    std::string text;
    if (!ReadProcFile(name, &text)) return true;
    ForEachLockLine(text, "lock:", [&](const LockLine& lock) {
      if (!lock.waiting && lock.kind == (whole_ ? "flock" : "ofd")) take(lock);
    });
  }
  if (whole_) return any;
  std::sort(covered.begin(), covered.end());
  Pos next = start_;  // the first byte not yet seen covered
  for (const auto& [from, to] : covered) {
    if (from > next) break;
    next = std::max(next, to);
    if (next >= end_) return true;
  }
  return next >= end_;
}

bool Lock::writable() const {
  if (desc_ == nullptr) return false;
  if (!desc_->adopted) return desc_->writable;
  const int flags = ::fcntl(desc_->fd.get(), F_GETFL);  // asked only when needed
  return flags >= 0 && (flags & O_ACCMODE) != O_RDONLY;
}

bool Lock::held() const {
  if (state_ != State::kHeld) return false;
  return !whole_ || !registry().WholeLost(desc_);
}

Status Lock::Take(Description* desc, RangeMode mode, const Deadline& deadline) {
  return whole_ ? registry().TakeWhole(desc, mode, deadline)
                : registry().TakeRange(desc, mode, start_, end_, deadline);
}

Status Lock::Give(Description* desc, RangeMode mode) {
  return whole_ ? registry().GiveWhole(desc, mode)
                : registry().GiveRange(desc, mode, start_, end_);
}

Status Lock::AcquireDescriptor(int fd, int mode, const Deadline& deadline) {
  return Acquire(true, fd, nullptr, mode, 0, kRangeEnd, PathOptions(), deadline);
}

Status Lock::AcquireDescriptor(int fd, int mode, Pos start, Pos end,
                               const Deadline& deadline) {
  return Acquire(false, fd, nullptr, mode, start, end, PathOptions(), deadline);
}

Status Lock::AcquirePath(const std::string& path, int mode, const PathOptions& options,
                         const Deadline& deadline) {
  return Acquire(true, -1, &path, mode, 0, kRangeEnd, options, deadline);
}

Status Lock::AcquirePath(const std::string& path, int mode, Pos start, Pos end,
                         const PathOptions& options, const Deadline& deadline) {
  return Acquire(false, -1, &path, mode, start, end, options, deadline);
}

Status Lock::Acquire(bool whole, int fd, const std::string* path, int mode, Pos start,
                     Pos end, const PathOptions& options, const Deadline& requested) {
  Release();
  path_.clear();
  options_ = PathOptions();
  // Anything else (LOCK_UN, LOCK_SH | LOCK_EX) would be taken as shared.
  const int base = mode & ~LOCK_NB;
  if (base != LOCK_SH && base != LOCK_EX) return Status::Error(EINVAL);
  if (!whole && !(start < end && end <= kRangeEnd)) return Status::Error(EINVAL);
  const Deadline deadline = (mode & LOCK_NB) != 0 ? Deadline::Now() : requested;
  const RangeMode want = ToRangeMode(mode);
  whole_ = whole;
  start_ = start;
  end_ = end;
  Description* desc = nullptr;
  Status status = Status::Ok();
  if (path == nullptr) {
    status = registry().AdoptAndTake(fd, whole_, want, start_, end_, deadline, &desc);
    if (!status.ok()) {
      if (desc != nullptr) registry().Unref(desc);
      return status;
    }
  } else {
    PathOptions open_options = options;
    // F_WRLCK needs a descriptor open for writing: no read-only fallback.
    open_options.need_write = !whole_ && want == RangeMode::kExclusive;
    constexpr int kStaleRetries = 100;  // a filesystem may keep saying so
    int stale_retries = 0;
    for (;;) {
      status = registry().Open(*path, open_options, deadline, &desc);
      if (!status.ok()) return status;
      status = Take(desc, want, deadline);
      if (!status.ok()) {
        registry().Unref(desc);
        // ESTALE: on a network filesystem another machine removed the file
        // between our open and our lock. Start over on what PATH names.
        if (status.err() == ESTALE && ++stale_retries < kStaleRetries &&
            (deadline.is_immediate() || !deadline.Expired())) {
          continue;
        }
        return status;
      }
      if (PathNamesInode(*path, options.follow_symlinks, desc->inode.dev,
                         desc->inode.ino)) {
        break;
      }
      // The previous holder removed or replaced the file while we waited:
      // let go of the orphan and try the file PATH names now.
      (void)registry().GiveAndUnref(desc, whole_, want, start_, end_);  // an orphan
      if (!deadline.is_immediate() && deadline.Expired()) return Status::Error(ETIMEDOUT);
    }
    path_ = *path;
    options_ = options;
  }
  desc_ = desc;
  owner_pid_ = CurrentPid();
  mode_ = mode & ~LOCK_NB;
  state_ = State::kHeld;
  status = AfterGrant();
  if (!status.ok()) Release();  // not coherent: not granted
  return status;
}

Status Lock::AfterGrant() {
  return coherent_ ? RefreshCachedData(desc_->fd.get(), start_, end_) : Status::Ok();
}

void Lock::BeforeOthersWrite() {
  // A failure cannot hold the release back; the POD says so.
  if (coherent_) (void)FlushDirtyData(desc_->fd.get());
}

// Whether anything but this lock holds a lock on the file: another lock of
// this process, or anyone else as the kernel sees it.
bool Lock::OthersHoldIt() {
  if (!registry().OnlyUser(desc_)) return true;
  if (whole_) {
    return mode_ != LOCK_EX && ::flock(desc_->fd.get(), LOCK_EX | LOCK_NB) != 0;
  }
  Conflict other;
  return !registry().FindConflict(desc_->fd.get(), RangeMode::kExclusive, 0, kRangeEnd,
                                  &other, desc_).ok() ||
         other.found;
}

Status Lock::Release() {
  if (state_ == State::kReleased) return Status::Ok();
  Status status = Status::Ok();
  if (InOwnerProcess() && state_ == State::kHeld) {
    BeforeOthersWrite();
    if (options_.unlink && !path_.empty() && !OthersHoldIt() &&
        PathNamesInode(path_, options_.follow_symlinks, desc_->inode.dev,
                       desc_->inode.ino)) {
      ::unlink(path_.c_str());
    }
    status = registry().GiveAndUnref(desc_, whole_, ToRangeMode(mode_), start_, end_);
  } else {
    registry().Unref(desc_);
  }
  desc_ = nullptr;
  state_ = State::kReleased;
  return status;
}

void Lock::Abandon() {
  if (state_ == State::kReleased) return;
  if (InOwnerProcess() && state_ == State::kHeld) {
    BeforeOthersWrite();
    registry().Forget(desc_, whole_, ToRangeMode(mode_), start_, end_);
  }
  registry().Unref(desc_);
  desc_ = nullptr;
  state_ = State::kReleased;
}

Status Lock::Upgrade(const Deadline& deadline) {
  if (state_ == State::kReleased) return Status::Error(ENOLCK);
  if (state_ == State::kHeld && mode_ == LOCK_EX) return Status::Ok();
  if (whole_ && state_ == State::kHeld) {
    // flock(2) conversion: the registry takes the shared lock back (or
    // says it is lost) when the wait fails.
    const Status status = Take(desc_, RangeMode::kExclusive, deadline);
    if (status.ok()) {
      // Asks nothing of the kernel: the exclusive hold wants more.
      (void)Give(desc_, RangeMode::kShared);
      mode_ = LOCK_EX;
      (void)AfterGrant();  // flock(2) upgrades are not atomic
    }
    return status;
  }
  if (state_ == State::kHeld) {
    Status status = Take(desc_, RangeMode::kExclusive, Deadline::Now());
    if (status.ok()) {
      (void)Give(desc_, RangeMode::kShared);  // as above
      mode_ = LOCK_EX;
      (void)AfterGrant();
      return status;
    }
    if (status.err() != EWOULDBLOCK || deadline.is_immediate()) return status;
    // Waiting while holding our shared bytes could deadlock with another
    // holder doing the same (OFD locks have no deadlock detection), so give
    // them up first, as flock(2) does; if the kernel keeps them, do not wait.
    const Status given = Give(desc_, RangeMode::kShared);
    state_ = State::kLost;
    if (!given.ok()) return given;
  }
  const Status status = Take(desc_, RangeMode::kExclusive, deadline);
  if (status.ok()) {
    mode_ = LOCK_EX;
    state_ = State::kHeld;
    (void)AfterGrant();
    return status;
  }
  if (mode_ == LOCK_SH && status.err() != EINTR &&
      Take(desc_, RangeMode::kShared, Deadline::Now()).ok()) {
    state_ = State::kHeld;  // the shared lock is back
  }
  return status;
}

Status Lock::Downgrade() {
  if (state_ == State::kReleased) return Status::Error(ENOLCK);
  if (held() && mode_ == LOCK_SH) return Status::Ok();
  if (state_ == State::kHeld && held()) {
    BeforeOthersWrite();
    // Only lowers: never waits. The hold is shared from here on; an error
    // says the kernel kept the bytes exclusive.
    mode_ = LOCK_SH;
    return whole_ ? registry().DowngradeWhole(desc_)
                  : registry().DowngradeRange(desc_, start_, end_);
  }
  if (state_ == State::kHeld) {  // a whole-file lock flock(2) dropped
    (void)Give(desc_, ToRangeMode(mode_));  // lowers what the kernel dropped
    state_ = State::kLost;
  }
  const Status status = Take(desc_, RangeMode::kShared, Deadline::Never());
  if (!status.ok()) return status;
  mode_ = LOCK_SH;
  state_ = State::kHeld;
  return status;
}

}  // namespace locker
