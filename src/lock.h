// Lock: one guard's lock, whole-file (flock(2)) or a byte range (OFD or
// classic POSIX locks), taken through PATH or through a caller's
// descriptor.
//
// A Lock belongs to the open file description (OFD) it was taken through,
// which the Registry tracks with a descriptor of its own: closing or
// reopening the caller's descriptor does not drop the lock. Locks on one OFD
// compose (the kernel holds the strongest mode any of them wants on each
// byte); locks on different OFDs conflict, in one process as across
// processes. See registry.h.
//
// A Lock is owned by one thread at a time (thread-compatible). After fork()
// both processes hold a copy; only the process that took the lock may change
// it: in any other process Release() only lets go of that process's copy of
// the descriptor.
#ifndef FILE_LOCKER_SRC_LOCK_H_
#define FILE_LOCKER_SRC_LOCK_H_

#include <sys/types.h>

#include <string>

#include "deadline.h"
#include "lock_path.h"
#include "range_table.h"
#include "registry.h"
#include "status.h"

namespace locker {

// True when range locks use OFD locks in this process.
bool UsingOfdLocks();

// [start, start + length), length 0 meaning to the end of the file and
// beyond (*end = kRangeEnd). EINVAL for a negative start or length,
// EOVERFLOW when the end lies beyond the last byte a lock can cover (2**63-1).
Status RangeEnd(off_t start, off_t length, Pos* end);

using Conflict = Registry::Conflict;

// Whether this process holds classic POSIX range locks on the inode, which
// the close of any descriptor of it would drop (always false with OFD
// locks).
bool ClassicLocksHeld(const InodeKey& inode);

// Whether mode (LOCK_SH / LOCK_EX) on [start, end) of fd, or of PATH, would
// conflict right now with another process or another OFD of this process.
// Never blocks; opening PATH never blocks either.
Status FindConflict(int fd, int mode, Pos start, Pos end, Conflict* out);
Status FindConflictAt(const std::string& path, int mode, Pos start, Pos end,
                      Conflict* out);

// Whether descriptors a and b of this process share one open file
// description (false where the kernel cannot say).
bool SameOpenFile(int a, int b);

class Lock final {
 public:
  enum class State { kReleased, kHeld, kLost };

  Lock() = default;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  // Moves the lock, held or not, with its reference to the OFD: `other` is
  // left released, holding nothing. Assignment first releases what *this
  // held. Lets a lock taken on one thread be handed to an owner on another.
  Lock(Lock&& other) noexcept;
  Lock& operator=(Lock&& other) noexcept;
  // Releases as Release() does.
  ~Lock() { Release(); }

  // coherent => 1: after every grant (acquire, upgrade) the file's cached
  // pages of the locked bytes are dropped, and before anyone else may write
  // (release, downgrade) its dirty data is flushed (see coherence.h), so
  // holders on other machines of a network filesystem see each other's
  // writes. Set before acquiring.
  void set_coherent(bool on) { coherent_ = on; }

  // Whole-file lock (flock(2)) through a caller's descriptor, which the
  // caller may close at any time afterwards. mode is LOCK_SH or LOCK_EX,
  // optionally | LOCK_NB (then the deadline is immediate). Blocks up to
  // deadline. Returns Ok, or EWOULDBLOCK, ETIMEDOUT, EINTR (run handlers,
  // call again with the same deadline), EBADF, EINVAL (any other mode), ...;
  // nothing is held then.
  Status AcquireDescriptor(int fd, int mode, const Deadline& deadline);
  // Byte range [start, end) (end kRangeEnd: to end of file) through a
  // caller's descriptor. LOCK_EX needs it open for writing (EBADF). Errors
  // as above, plus EDEADLK from classic locks, and EINVAL unless
  // start < end <= kRangeEnd.
  Status AcquireDescriptor(int fd, int mode, Pos start, Pos end,
                           const Deadline& deadline);
  // The same through PATH, opened by OpenLockFile's rules. After the grant
  // PATH must still name the locked inode; if another holder removed or
  // replaced the file, the lock is dropped and taken again on the new file,
  // all within deadline.
  Status AcquirePath(const std::string& path, int mode, const PathOptions& options,
                     const Deadline& deadline);
  Status AcquirePath(const std::string& path, int mode, Pos start, Pos end,
                     const PathOptions& options, const Deadline& deadline);

  // Gives back what only this lock wanted and lets go of the descriptor.
  // With options.unlink, first removes PATH if it still names the locked
  // inode and no other lock (here or elsewhere) is on it. In a process
  // other than the taker, only lets go of this process's copy. A second
  // call does nothing. Never blocks. The lock is let go of whatever
  // happens; an error (ENOLCK) means the kernel could not lower bytes
  // other locks on the OFD still hold, so it keeps more than they want,
  // never less (see Registry::GiveRange).
  Status Release();

  // Lets go without unlocking: the record forgets the lock, the
  // registry's descriptor closes, and the kernel keeps the lock for as long
  // as another descriptor of the OFD stays open (one handed to a command
  // that outlives this process, say). Classic locks are dropped by that
  // close, as POSIX says. Never blocks.
  void Abandon();

  // Shared to exclusive, waiting up to deadline. Whole file: flock(2)
  // semantics (the shared lock may be dropped while waiting; if the wait
  // fails it is taken back without waiting where possible, else held()
  // turns false). Range: tries atomically first; when busy gives up the
  // bytes and waits, so two holders upgrading at once cannot deadlock; on
  // failure takes the shared bytes back without waiting, or ends kLost.
  Status Upgrade(const Deadline& deadline);
  // Exclusive to shared. Never blocks unless a lost lock must be retaken.
  Status Downgrade();

  State state() const { return state_; }
  // Whether the lock is held now (a whole-file lock that flock(2) dropped
  // during a failed conversion is not).
  bool held() const;
  bool released() const { return state_ == State::kReleased; }
  // Whether the kernel itself lists this lock's open file description as
  // holding its bytes in at least its mode (/proc/self/fdinfo): false when
  // something outside this Lock dropped or lowered them -- a process that
  // shares the description through fork, say. True where the kernel cannot
  // say: no /proc, or classic locks, which it files under whichever
  // descriptor set them. Reads /proc: for answers, not for hot paths.
  bool KernelHolds() const;
  int mode() const { return mode_; }  // LOCK_SH or LOCK_EX
  bool whole() const { return whole_; }
  Pos start() const { return start_; }
  Pos end() const { return end_; }
  // The registry's descriptor for the lock's OFD (-1 once released).
  int fd() const { return desc_ ? desc_->fd.get() : -1; }
  // Whether the lock's descriptor is open for writing.
  bool writable() const;
  const std::string& path() const { return path_; }
  // The locked file (asked of the kernel on first use for a caller's
  // descriptor).
  InodeKey inode() const { return desc_ ? Registry::Get().FileOf(desc_) : InodeKey(); }
  // Says that a descriptor the caller made (a dup of fd()) shares the
  // lock's OFD, so it is never reused as a fresh one.
  void MarkShared() {
    if (desc_ != nullptr) Registry::Get().MarkShared(desc_);
  }
  // True in the process that took the lock.
  bool InOwnerProcess() const;

 private:
  Status Acquire(bool whole, int fd, const std::string* path, int mode, Pos start,
                 Pos end, const PathOptions& options, const Deadline& deadline);
  Status Take(Description* desc, RangeMode mode, const Deadline& deadline);
  Status Give(Description* desc, RangeMode mode);
  bool OthersHoldIt();
  Status AfterGrant();
  void BeforeOthersWrite();

  State state_ = State::kReleased;
  bool whole_ = true;
  int mode_ = 0;
  Pos start_ = 0;
  Pos end_ = 0;
  Description* desc_ = nullptr;  // one reference, while not released
  pid_t owner_pid_ = 0;
  std::string path_;  // empty for a caller's descriptor
  PathOptions options_;
  bool coherent_ = false;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_LOCK_H_
