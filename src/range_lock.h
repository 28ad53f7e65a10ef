// Byte-range locks that belong to a handle, and that compose.
//
// On kernels with open-file-description locks (F_OFD_SETLK and friends) a
// range lock belongs to the descriptor's open file description: two handles
// in one process conflict, and closing another descriptor of the same file
// does not drop it. Elsewhere (or when FILE_LOCKER_NO_OFD=1 is set in the
// environment) classic POSIX locks are used, with a process-wide table per
// device and inode that gives the same behaviour to locks taken through
// File::Locker: same-process conflicts are detected in the table, and a
// descriptor whose close would drop the process's other locks on the inode
// is kept open until the last of them is released.
//
// Several RangeLocks on one descriptor compose: the kernel holds each byte
// in the strongest mode any live lock on that descriptor still wants, so
// releasing or downgrading one never undoes another.
//
// A RangeLock is thread-compatible; the shared tables behind it are guarded
// by a process-wide mutex that is never held while waiting for the kernel.
#ifndef FILE_LOCKER_SRC_RANGE_LOCK_H_
#define FILE_LOCKER_SRC_RANGE_LOCK_H_

#include <sys/types.h>

#include <string>

#include "deadline.h"
#include "file_lock.h"
#include "range_table.h"
#include "status.h"

namespace locker {

// True when range locks use OFD locks in this process.
bool UsingOfdLocks();

// [start, start + length), length 0 meaning to end of file and beyond.
// Fails with EINVAL for a negative start or length and EOVERFLOW when the end
// does not fit in off_t. On success *end is the exclusive end (kRangeEnd for
// length 0).
Status RangeEnd(off_t start, off_t length, off_t* end);

// What range_conflict reports: a lock that would conflict.
struct Conflict {
  bool found = false;
  int mode = 0;     // LOCK_SH or LOCK_EX
  off_t start = 0;
  off_t length = 0;  // 0: to end of file
  pid_t pid = -1;    // -1 where the kernel does not say (OFD holders)
};

// Whether `mode` (LOCK_SH/LOCK_EX) on [start, end) of fd would conflict right
// now, with other processes or other handles of this process. Never blocks.
Status FindConflict(int fd, int mode, off_t start, off_t end, Conflict* out);

// The same for PATH, opened read-only for the question (every holder counts).
Status FindConflictAt(const std::string& path, int mode, off_t start, off_t end,
                      Conflict* out);

// Closes fd -- unless this process holds classic POSIX range locks on its
// inode, which any close of a descriptor of that inode would drop: then the
// descriptor is kept open until the last of those locks is released.
void CloseKeepingLocks(UniqueFd fd);

// Whether this process holds classic POSIX range locks on dev/ino (always
// false with OFD locks).
bool ClassicLocksHeld(dev_t dev, ino_t ino);

class RangeLock final {
 public:
  enum class State { kReleased, kHeld, kLost };

  RangeLock() = default;
  RangeLock(const RangeLock&) = delete;
  RangeLock& operator=(const RangeLock&) = delete;
  ~RangeLock() { Release(); }

  // Locks [start, end) of fd (the caller keeps it open) in mode LOCK_SH or
  // LOCK_EX (| LOCK_NB). LOCK_EX needs fd open for writing (EBADF). Blocks up
  // to deadline; errors as locker::Flock, plus EDEADLK from classic locks.
  Status AcquireDescriptor(int fd, int mode, off_t start, off_t end,
                           const Deadline& deadline);
  // The same through PATH, with lock_file's path rules (see LockThroughPath).
  Status AcquirePath(const std::string& path, int mode, off_t start, off_t end,
                     const PathOptions& options, const Deadline& deadline);

  // Gives back what only this lock wanted; closes an owned descriptor. With
  // options.unlink, removes PATH first if it still names the locked file and
  // nobody else holds any lock on it. Outside the owner process only closes
  // this process's copy. Never blocks.
  void Release();
  // Drops the record of the lock without touching descriptor or kernel (the
  // caller's descriptor was closed or reused).
  void Forget();

  // Shared to exclusive. Tries atomically first; when busy, gives up the
  // bytes only this lock held shared and waits for the exclusive lock, so two
  // holders upgrading at once cannot deadlock. On failure takes the shared
  // lock back without waiting if it can (state kHeld, shared) or ends kLost.
  Status Upgrade(const Deadline& deadline);
  // Exclusive to shared. Never blocks (from kLost: takes a shared lock).
  Status Downgrade();

  State state() const { return state_; }
  bool held() const { return state_ == State::kHeld; }
  bool released() const { return state_ == State::kReleased; }
  int mode() const { return mode_; }
  off_t start() const { return start_; }
  off_t end() const { return end_; }
  int fd() const { return file_.fd; }
  bool writable() const { return file_.writable; }
  const std::string& path() const { return file_.path; }
  dev_t dev() const { return file_.dev; }
  ino_t ino() const { return file_.ino; }
  bool InOwnerProcess() const;

 private:
  State state_ = State::kReleased;
  int mode_ = 0;
  off_t start_ = 0;
  off_t end_ = 0;
  LockedFile file_;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_RANGE_LOCK_H_
