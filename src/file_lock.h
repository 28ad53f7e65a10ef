// Whole-file flock(2) locks held by a guard, and lock files that are safe in
// shared directories.
//
// A FileLock is owned by one thread at a time (thread-compatible, not
// thread-safe). After fork() both processes hold a copy of the object; only
// the process that took the lock may change it: in any other process
// Release() merely closes that process's copy of an owned descriptor.
#ifndef FILE_LOCKER_SRC_FILE_LOCK_H_
#define FILE_LOCKER_SRC_FILE_LOCK_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <utility>

#include <errno.h>

#include "deadline.h"
#include "lock_path.h"
#include "status.h"
#include "unique_fd.h"

namespace locker {

// The descriptor side of a lock taken through PATH or a caller's descriptor:
// which descriptor, whether this object owns (and will close) it, and which
// process took the lock. Shared by whole-file and range locks.
struct LockedFile final {
  int fd = -1;
  UniqueFd owned;  // set when opened from a path
  bool writable = false;
  pid_t owner_pid = 0;
  std::string path;
  PathOptions options;
  dev_t dev = 0;
  ino_t ino = 0;

  bool PathStillNamesIt() const {
    return PathNamesInode(path, options.follow_symlinks, dev, ino);
  }
};

// Opens PATH and calls lock(fd) -> Status until the lock is granted on the
// inode PATH names after the grant; when PATH was removed or replaced in the
// meantime, hands the descriptor to let_go(UniqueFd, bool locked) -- which
// unlocks if locked and closes it -- and starts over, all within deadline.
// Every descriptor this gives up goes through let_go. On success fills *out
// (owner_pid excepted).
template <typename Lock, typename LetGo>
Status LockThroughPath(const std::string& path, const PathOptions& options,
                       const Deadline& deadline, Lock&& lock, LetGo&& let_go,
                       LockedFile* out) {
  for (;;) {
    UniqueFd fd;
    bool writable;
    Status status = OpenLockFile(path, options, &fd, &writable);
    if (!status.ok()) return status;
    status = lock(fd.get());
    if (!status.ok()) {
      let_go(std::move(fd), false);
      // ESTALE: a network filesystem's file was removed between our open
      // and our lock (by another machine). Start over on what PATH names.
      if (status.err() == ESTALE && (deadline.is_immediate() || !deadline.Expired())) continue;
      return status;
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) {
      const int err = errno;
      let_go(std::move(fd), true);
      return Status::Error(err);
    }
    if (PathNamesInode(path, options.follow_symlinks, st.st_dev, st.st_ino)) {
      out->fd = fd.get();
      out->owned = std::move(fd);
      out->writable = writable;
      out->path = path;
      out->options = options;
      out->dev = st.st_dev;
      out->ino = st.st_ino;
      return status;
    }
    // The previous holder removed or replaced the file while we waited:
    // let go of the orphan and try the file PATH names now.
    let_go(std::move(fd), true);
    if (!deadline.is_immediate() && deadline.Expired()) return Status::Error(ETIMEDOUT);
  }
}

class FileLock final {
 public:
  enum class State { kReleased, kHeld, kLost };

  FileLock() = default;
  // The moved-from lock is left released, so it can never unlock the lock
  // it handed over.
  FileLock(FileLock&& other) noexcept { *this = std::move(other); }
  FileLock& operator=(FileLock&& other) noexcept {
    if (this != &other) {
      Release();
      state_ = std::exchange(other.state_, State::kReleased);
      mode_ = other.mode_;
      file_ = std::move(other.file_);
      other.file_.fd = -1;
    }
    return *this;
  }
  // Releases as Release() does.
  ~FileLock() { Release(); }

  // Locks `fd`, a descriptor the caller owns and keeps open while the lock
  // lives. mode is LOCK_SH or LOCK_EX, optionally | LOCK_NB. Blocks up to
  // deadline; errors as locker::Flock (EINTR: run handlers, call again).
  Status AcquireDescriptor(int fd, int mode, const Deadline& deadline);

  // Opens PATH (OpenLockFile), locks it, then checks that PATH still names
  // the locked inode; if another holder removed or replaced the file, drops
  // the lock and starts over on the new file, all within deadline. On EINTR
  // nothing is left open or locked.
  Status AcquirePath(const std::string& path, int mode,
                     const PathOptions& options, const Deadline& deadline);

  // Unlocks and closes the owned descriptor; with options.unlink, first
  // removes PATH if it still names the locked inode and no other process
  // holds a lock on it (a shared lock is converted to exclusive without
  // waiting to find out). In a process other than the one that took the
  // lock, only closes this process's copy of an owned descriptor. A second
  // call does nothing. Never blocks.
  void Release();

  // For a borrowed descriptor that the caller has closed or reused: forget
  // it without touching it.
  void Forget();

  // Converts a shared lock to exclusive, waiting up to deadline. flock(2)
  // drops the shared lock before it waits, so two holders upgrading at once
  // cannot deadlock. If the wait fails (EWOULDBLOCK, ETIMEDOUT) the shared
  // lock is taken back without waiting where possible: state() then says
  // kHeld (shared) or kLost. On EINTR the lock is in state kLost until the
  // caller calls again. From kLost, tries to take the exclusive lock anew.
  Status Upgrade(const Deadline& deadline);

  // Converts to shared (from kLost: takes a shared lock). Blocks only if a
  // lost lock must be retaken. EINTR: call again.
  Status Downgrade();

  State state() const { return state_; }
  bool held() const { return state_ == State::kHeld; }
  bool released() const { return state_ == State::kReleased; }
  int mode() const { return mode_; }  // LOCK_SH or LOCK_EX
  int fd() const { return file_.fd; }
  bool writable() const { return file_.writable; }
  const std::string& path() const { return file_.path; }
  // True in the process that took the lock.
  bool InOwnerProcess() const;

 private:
  Status Convert(int mode, const Deadline& deadline);

  State state_ = State::kReleased;
  int mode_ = 0;
  LockedFile file_;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_FILE_LOCK_H_
