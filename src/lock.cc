#include "lock.h"

#include <errno.h>
#include <sys/file.h>
#include <unistd.h>

#include <utility>

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
  other.path_.clear();
  return *this;
}

bool Lock::InOwnerProcess() const { return owner_pid_ == CurrentPid(); }

bool Lock::held() const {
  if (state_ != State::kHeld) return false;
  return !whole_ || !registry().WholeLost(desc_);
}

Status Lock::Take(Description* desc, RangeMode mode, const Deadline& deadline) {
  return whole_ ? registry().TakeWhole(desc, mode, deadline)
                : registry().TakeRange(desc, mode, start_, end_, deadline);
}

void Lock::Give(Description* desc, RangeMode mode) {
  if (whole_) {
    registry().GiveWhole(desc, mode);
  } else {
    registry().GiveRange(desc, mode, start_, end_);
  }
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
  const Deadline deadline = (mode & LOCK_NB) != 0 ? Deadline::Now() : requested;
  const RangeMode want = ToRangeMode(mode);
  whole_ = whole;
  start_ = start;
  end_ = end;
  Description* desc = nullptr;
  Status status = Status::Ok();
  if (path == nullptr) {
    status = registry().Adopt(fd, &desc);
    if (!status.ok()) return status;
    status = Take(desc, want, deadline);
    if (!status.ok()) {
      registry().Unref(desc);
      return status;
    }
  } else {
    const bool need_write = !whole_ && want == RangeMode::kExclusive;
    for (;;) {
      status = registry().Open(*path, options, need_write, &desc);
      if (!status.ok()) return status;
      status = Take(desc, want, deadline);
      if (!status.ok()) {
        registry().Unref(desc);
        return status;
      }
      if (PathNamesInode(*path, options.follow_symlinks, desc->inode.dev,
                         desc->inode.ino)) {
        break;
      }
      // The previous holder removed or replaced the file while we waited:
      // let go of the orphan and try the file PATH names now.
      Give(desc, want);
      registry().Unref(desc);
      if (!deadline.is_immediate() && deadline.Expired()) return Status::Error(ETIMEDOUT);
    }
    path_ = *path;
    options_ = options;
  }
  desc_ = desc;
  owner_pid_ = CurrentPid();
  mode_ = mode & ~LOCK_NB;
  state_ = State::kHeld;
  return status;
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

void Lock::Release() {
  if (state_ == State::kReleased) return;
  if (InOwnerProcess() && state_ == State::kHeld) {
    if (options_.unlink && !path_.empty() && !OthersHoldIt() &&
        PathNamesInode(path_, options_.follow_symlinks, desc_->inode.dev,
                       desc_->inode.ino)) {
      ::unlink(path_.c_str());
    }
    Give(desc_, ToRangeMode(mode_));
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
      Give(desc_, RangeMode::kShared);
      mode_ = LOCK_EX;
    }
    return status;
  }
  if (state_ == State::kHeld) {
    Status status = Take(desc_, RangeMode::kExclusive, Deadline::Now());
    if (status.ok()) {
      Give(desc_, RangeMode::kShared);
      mode_ = LOCK_EX;
      return status;
    }
    if (status.err() != EWOULDBLOCK || deadline.is_immediate()) return status;
    // Waiting while holding our shared bytes could deadlock with another
    // holder doing the same (OFD locks have no deadlock detection), so give
    // them up first, as flock(2) does.
    Give(desc_, RangeMode::kShared);
    state_ = State::kLost;
  }
  const Status status = Take(desc_, RangeMode::kExclusive, deadline);
  if (status.ok()) {
    mode_ = LOCK_EX;
    state_ = State::kHeld;
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
    // The exclusive hold still covers everything, so the shared one is
    // granted at once; giving back the exclusive one then lowers the mode.
    const Status status = Take(desc_, RangeMode::kShared, Deadline::Now());
    if (!status.ok()) return status;
    Give(desc_, ToRangeMode(mode_));
    mode_ = LOCK_SH;
    return status;
  }
  if (state_ == State::kHeld) {  // a whole-file lock flock(2) dropped
    Give(desc_, ToRangeMode(mode_));
    state_ = State::kLost;
  }
  const Status status = Take(desc_, RangeMode::kShared, Deadline::Never());
  if (!status.ok()) return status;
  mode_ = LOCK_SH;
  state_ = State::kHeld;
  return status;
}

}  // namespace locker
