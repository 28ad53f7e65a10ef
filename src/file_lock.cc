#include "file_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flock_lock.h"
#include "process.h"

namespace locker {

namespace {

bool IsReadOnlyFallbackError(int err) {
  return err == EACCES || err == EPERM || err == EROFS || err == EISDIR ||
         err == ETXTBSY;
}

// Whether PATH names dev/ino now (lstat unless following symlinks).
bool NamesInode(const std::string& path, bool follow, dev_t dev, ino_t ino) {
  struct stat st;
  const int rc = follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st);
  return rc == 0 && st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

Status OpenLockFile(const std::string& path, const PathOptions& options,
                    UniqueFd* fd, bool* writable) {
  int flags = O_CLOEXEC | O_NOCTTY;
  if (!options.follow_symlinks) flags |= O_NOFOLLOW;
  if (options.create) flags |= O_CREAT;
  int raw = ::open(path.c_str(), flags | O_RDWR, options.perms);
  *writable = raw >= 0;
  if (raw < 0 && IsReadOnlyFallbackError(errno)) {
    // Another user's lock file, a read-only mount or a directory: flock(2)
    // works on a read-only descriptor.
    raw = ::open(path.c_str(), flags | O_RDONLY, options.perms);
  }
  if (raw < 0) return Status::Error(errno);
  fd->reset(raw);
  return Status::Ok();
}

bool FileLock::InOwnerProcess() const { return owner_pid_ == CurrentPid(); }

Status FileLock::AcquireDescriptor(int fd, int mode, const Deadline& deadline) {
  Release();
  const Status status = Flock(fd, mode, deadline);
  if (!status.ok()) return status;
  fd_ = fd;
  mode_ = mode & ~LOCK_NB;
  owner_pid_ = CurrentPid();
  state_ = State::kHeld;
  return status;
}

Status FileLock::AcquirePath(const std::string& path, int mode,
                             const PathOptions& options,
                             const Deadline& deadline) {
  Release();
  for (;;) {
    UniqueFd fd;
    bool writable;
    Status status = OpenLockFile(path, options, &fd, &writable);
    if (!status.ok()) return status;
    status = Flock(fd.get(), mode, deadline);
    if (!status.ok()) return status;  // fd closes: nothing stays locked

    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Status::Error(errno);
    if (NamesInode(path, options.follow_symlinks, st.st_dev, st.st_ino)) {
      fd_ = fd.get();
      owned_ = std::move(fd);
      writable_ = writable;
      mode_ = mode & ~LOCK_NB;
      owner_pid_ = CurrentPid();
      path_ = path;
      options_ = options;
      dev_ = st.st_dev;
      ino_ = st.st_ino;
      state_ = State::kHeld;
      return status;
    }
    // The previous holder removed or replaced the file while we waited:
    // closing fd drops the lock on the orphan; try the file PATH names now.
    if (deadline.is_immediate()) continue;  // one more try, still non-blocking
    if (deadline.Expired()) return Status::Error(ETIMEDOUT);
  }
}

bool FileLock::PathNamesLockedInode() const {
  return NamesInode(path_, options_.follow_symlinks, dev_, ino_);
}

void FileLock::Release() {
  if (state_ == State::kReleased) return;
  if (InOwnerProcess()) {
    if (state_ == State::kHeld && options_.unlink &&
        (mode_ == LOCK_EX || ::flock(fd_, LOCK_EX | LOCK_NB) == 0) &&
        PathNamesLockedInode()) {
      ::unlink(path_.c_str());
    }
    // Explicitly: a forked child may share the open file description, so
    // closing our descriptor alone would not end the lock.
    ::flock(fd_, LOCK_UN);
  }
  owned_.reset();
  fd_ = -1;
  state_ = State::kReleased;
}

void FileLock::Forget() {
  owned_.release();
  fd_ = -1;
  state_ = State::kReleased;
}

Status FileLock::Convert(int mode, const Deadline& deadline) {
  // mode_ keeps the last granted mode through kLost, so an upgrade that is
  // interrupted, resumed and then fails still takes its shared lock back.
  const bool was_shared = mode_ == LOCK_SH && mode == LOCK_EX;
  // From here on the kernel may have dropped the old lock (flock(2)
  // conversions are not atomic), so say so until the new one is granted.
  state_ = State::kLost;
  const Status status = Flock(fd_, mode, deadline);
  if (status.ok()) {
    mode_ = mode;
    state_ = State::kHeld;
    return status;
  }
  if (was_shared && status.err() != EINTR &&
      ::flock(fd_, LOCK_SH | LOCK_NB) == 0) {
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
