#include "file_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flock_lock.h"
#include "process.h"

namespace locker {

bool FileLock::InOwnerProcess() const { return file_.owner_pid == CurrentPid(); }

Status FileLock::AcquireDescriptor(int fd, int mode, const Deadline& deadline) {
  Release();
  const Status status = Flock(fd, mode, deadline);
  if (!status.ok()) return status;
  file_ = LockedFile();
  file_.fd = fd;
  file_.owner_pid = CurrentPid();
  mode_ = mode & ~LOCK_NB;
  state_ = State::kHeld;
  return status;
}

Status FileLock::AcquirePath(const std::string& path, int mode,
                             const PathOptions& options,
                             const Deadline& deadline) {
  Release();
  LockedFile file;
  const Status status = LockThroughPath(
      path, options, deadline, [&](int fd) { return Flock(fd, mode, deadline); },
      [](UniqueFd fd, bool) { fd.reset(); },  // closing drops a flock(2) lock
      &file);
  if (!status.ok()) return status;
  file_ = std::move(file);
  file_.owner_pid = CurrentPid();
  mode_ = mode & ~LOCK_NB;
  state_ = State::kHeld;
  return status;
}

void FileLock::Release() {
  if (state_ == State::kReleased) return;
  if (InOwnerProcess()) {
    if (state_ == State::kHeld && file_.options.unlink &&
        (mode_ == LOCK_EX || ::flock(file_.fd, LOCK_EX | LOCK_NB) == 0) &&
        file_.PathStillNamesIt()) {
      ::unlink(file_.path.c_str());
    }
    // Explicitly: a forked child may share the open file description, so
    // closing our descriptor alone would not end the lock.
    ::flock(file_.fd, LOCK_UN);
  }
  file_.owned.reset();
  file_.fd = -1;
  state_ = State::kReleased;
}

void FileLock::Forget() {
  file_.owned.release();
  file_.fd = -1;
  state_ = State::kReleased;
}

Status FileLock::Convert(int mode, const Deadline& deadline) {
  // mode_ keeps the last granted mode through kLost, so an upgrade that is
  // interrupted, resumed and then fails still takes its shared lock back.
  const bool was_shared = mode_ == LOCK_SH && mode == LOCK_EX;
  // From here on the kernel may have dropped the old lock (flock(2)
  // conversions are not atomic), so say so until the new one is granted.
  state_ = State::kLost;
  const Status status = Flock(file_.fd, mode, deadline);
  if (status.ok()) {
    mode_ = mode;
    state_ = State::kHeld;
    return status;
  }
  if (was_shared && status.err() != EINTR &&
      ::flock(file_.fd, LOCK_SH | LOCK_NB) == 0) {
    state_ = State::kHeld;  // the shared lock is back
  }
  return status;
}
Status FileLock::Upgrade(const Deadline& deadline) {
  if (state_ == State::kReleased) return Status::Error(ENOLCK);
  if (state_ == State::kHeld && mode_ == LOCK_EX) return Status::Ok();
  return Convert(LOCK_EX, deadline);
}

Status FileLock::Downgrade() {
  if (state_ == State::kReleased) return Status::Error(ENOLCK);
  if (state_ == State::kHeld && mode_ == LOCK_SH) return Status::Ok();
  return Convert(LOCK_SH, Deadline::Never());
}

}  // namespace locker
