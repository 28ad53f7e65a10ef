// The process's record of the open file descriptions it locks through.
//
// A lock belongs to an open file description (OFD), never to a descriptor
// number. The Registry keeps one Description per OFD that live locks use,
// each with its own close-on-exec descriptor (so closing or reopening a
// caller's handle cannot drop a lock) and the holds of every live lock on
// it, so that locks on one OFD compose: on each byte, and for the whole file,
// the kernel is asked for the strongest mode a live lock there still wants.
//
// The kernel is the only authority. Every request goes to the kernel, even
// when the record says another lock on the same OFD already covers it, and a
// caller's descriptor is matched to a Description by asking the kernel
// whether both name one OFD (kcmp(2) KCMP_FILE), never by its number. After
// fork() the child's copies of all Descriptions are marked inherited: they
// hold nothing for the child and are never matched again; the child's
// copies of the locks can only let go of their descriptors.
//
// Backends: whole-file locks use flock(2). Range locks use OFD locks where
// the kernel has them; otherwise (or with FILE_LOCKER_NO_OFD set to a true
// value) classic POSIX locks, which belong to the process and are dropped by
// the close of any descriptor of the file. For those the Registry also
// keeps, per inode, the union of the process's holds (so one owner's
// request sees another's as a conflict) and the descriptors it must not
// close while the process holds classic locks there; those idle descriptors
// are reused before anything new is opened, so their number is bounded by
// the most locks ever alive at once on the inode, never by the number of
// calls.
//
// Thread-safe: every member function takes the registry's mutex itself
// (callers never hold it); the mutex is never held while a call waits for
// the kernel (a request that cannot wait, F_OFD_SETLK, may be made under it).
#ifndef FILE_LOCKER_SRC_REGISTRY_H_
#define FILE_LOCKER_SRC_REGISTRY_H_

#include <sys/types.h>

#include <condition_variable>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "deadline.h"
#include "lock_path.h"
#include "range_table.h"
#include "status.h"
#include "unique_fd.h"

namespace locker {

// Whether descriptors a and b of this process share one open file
// description: 1 or 0, or -1 where kcmp(2) cannot say.
int SameFile(int a, int b);

struct InodeKey {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator<(const InodeKey& o) const {
    return dev != o.dev ? dev < o.dev : ino < o.ino;
  }
  bool operator==(const InodeKey& o) const { return dev == o.dev && ino == o.ino; }
};

// One open file description and the holds of the live locks on it. Only
// the Registry changes it, under its mutex.
struct Description {
  InodeKey inode;
  UniqueFd fd;             // the registry's own descriptor (close-on-exec)
  bool writable = false;   // opened for writing (known for opened paths only)
  bool adopted = false;    // shares its OFD with a descriptor not ours
  bool inherited = false;  // copied by fork(): holds nothing here
  bool whole_lost = false;  // flock(2) dropped the whole-file lock (see TakeWhole)
  bool indexed = true;     // inode known and listed in the registry's inodes_
  int refs = 0;            // Locks pointing here
  RangeTable ranges;       // range holds, including requests at the kernel
  RangeTable pending;      // just the requests still at the kernel
  Holds whole;             // whole-file holds
  int whole_inflight = 0;  // whole-file requests at the kernel (at most 1)
  Description* prev = nullptr;  // the registry's list of live Descriptions
  Description* next = nullptr;
};

class Registry final {
 public:
  // The process's registry.
  static Registry& Get();

  // True when range locks are OFD locks in this process.
  bool ofd() const { return ofd_; }

  // Sets *out to the Description of the OFD behind a caller's descriptor,
  // with one more reference: an existing one when a live lock already uses
  // that OFD, else a new one holding a close-on-exec duplicate of fd (EBADF
  // for a descriptor that is not open). Then takes the lock as TakeWhole
  // (whole) or TakeRange does, in the same hold of the mutex when it can be
  // had without waiting. *out stays set when only the lock failed.
  Status AdoptAndTake(int fd, bool whole, RangeMode mode, Pos start, Pos end,
                      const Deadline& deadline, Description** out);

  // Opens PATH for locking (OpenLockFile's rules, within deadline) as a new
  // OFD with one reference. With classic locks, an idle descriptor of the
  // inode PATH names is reused first (one open for writing where
  // options.need_write).
  Status Open(const std::string& path, const PathOptions& options,
              const Deadline& deadline, Description** out);

  // The inode desc's OFD is on (asked of the kernel once, if not yet known).
  InodeKey FileOf(Description* desc);

  // Drops one reference; the last closes the descriptor -- or keeps it idle
  // when closing it would drop this process's classic locks on the inode.
  // Never touches the kernel's locks otherwise.
  void Unref(Description* desc);

  // GiveWhole (whole) or GiveRange, then Unref, in one hold of the mutex:
  // what letting go of a held lock takes.
  Status GiveAndUnref(Description* desc, bool whole, RangeMode mode, Pos start, Pos end);

  // Takes one hold of mode on [start, end) through desc, waiting up to
  // deadline: the kernel is asked for every byte of the range in the
  // strongest mode desc's live locks want there. Classic backend: another
  // owner of this process holding a conflicting mode is a conflict
  // (EWOULDBLOCK, ETIMEDOUT; EDEADLK when the wait has no bound). Errors as
  // locker::Flock, plus EBADF (exclusive through a read-only descriptor).
  Status TakeRange(Description* desc, RangeMode mode, Pos start, Pos end,
                   const Deadline& deadline);
  // Gives back one hold: the kernel drops the bytes nobody else on desc
  // (classic: in the process) wants and downgrades those only shared holds
  // still want. Never blocks. The hold is gone whatever the kernel says; an
  // error (ENOLCK: the kernel had no room to split a lock) means it still
  // holds some bytes in a stronger mode than the holds left want -- more,
  // never less.
  Status GiveRange(Description* desc, RangeMode mode, Pos start, Pos end);

  // Turns one exclusive hold on [start, end) into a shared one. Never
  // blocks, never waits for another request. Errors as GiveRange.
  Status DowngradeRange(Description* desc, Pos start, Pos end);

  // The same for whole-file (flock(2)) holds. flock(2) conversions are not
  // atomic: a wait for exclusive may drop the shared lock desc held; if it
  // cannot be taken back at once after a failed wait, desc->whole_lost is
  // set until a later request succeeds.
  Status TakeWhole(Description* desc, RangeMode mode, const Deadline& deadline);
  Status GiveWhole(Description* desc, RangeMode mode);
  Status DowngradeWhole(Description* desc);

  // Says that a descriptor outside the registry now shares desc's OFD (a
  // Perl handle made for the lock): once idle, desc's descriptor is never
  // handed out again as a fresh OFD.
  void MarkShared(Description* desc);

  // Withdraws one hold (whole-file, or [start, end)) from the record
  // without touching the kernel.
  void Forget(Description* desc, bool whole, RangeMode mode, Pos start, Pos end);

  // Whether desc's whole-file hold has been lost (see TakeWhole).
  bool WholeLost(const Description* desc);

  // Whether this process's holds on desc are its only ones on the inode.
  bool OnlyUser(Description* desc);

  // What would conflict with mode on [start, end) through fd right now,
  // with other processes or (classic) other owners here. Never blocks.
  struct Conflict {
    bool found = false;
    int mode = 0;      // LOCK_SH or LOCK_EX
    Pos start = 0;
    Pos length = 0;    // 0: to end of file
    pid_t pid = -1;    // -1 where the kernel does not say (OFD holders)
  };
  // `except`: a Description whose holds do not count (classic backend).
  Status FindConflict(int fd, RangeMode mode, Pos start, Pos end, Conflict* out,
                      const Description* except = nullptr);
  // The same through PATH, opened without following a final symlink
  // unless follow; the descriptor is closed or kept as Unref would.
  Status FindConflictAt(const std::string& path, RangeMode mode, Pos start,
                        Pos end, Conflict* out);

  // Whether this process holds classic locks on the inode (false with OFD
  // locks).
  bool ClassicLocksHeld(const InodeKey& inode);

  // Open descriptors kept idle for the inode (for tests).
  size_t IdleDescriptors(const InodeKey& inode);

 private:
  struct Inode {
    RangeTable all;      // classic: the union of every owner's holds
    RangeTable pending;  // classic: requests still at the kernel
    struct Idle {
      UniqueFd fd;
      bool writable;
      bool reusable;  // false for descriptors inherited through fork
    };
    std::vector<Idle> idle;
    std::list<Description*> descriptions;  // live, not inherited
  };

  Registry();
  static void PrepareFork();
  static void ParentAfterFork();
  static void ChildAfterFork();

  Description* Match(int fd, const InodeKey& inode) const;
  void Index(Description* desc);
  Description* NewDescription(UniqueFd fd, const InodeKey& inode, bool writable);
  void Close(UniqueFd fd, const InodeKey& inode, bool writable, bool reusable);
  bool ConflictsInProcess(const InodeKey& inode, const Description* except,
                          RangeMode mode, Pos start, Pos end, Conflict* out) const;
  Status KernelConflict(int fd, RangeMode mode, Pos start, Pos end,
                        Conflict* out) const;
  Status SyncKernel(Description* desc, Pos start, Pos end);
  // TakeRange for a request that must wait: its turn among this process's
  // requests on the bytes, then the kernel, without the mutex.
  template <typename Then>
  Status AdoptThen(int fd, Description** out, Then&& then);
  Status TryRange(Description* desc, RangeMode mode, Pos start, Pos end,
                  const Deadline& deadline, bool* wait);
  Status WaitRange(Description* desc, RangeMode mode, Pos start, Pos end,
                   const Deadline& deadline);
  Status TryWhole(Description* desc, RangeMode mode, const Deadline& deadline, bool* wait);
  Status WaitWhole(Description* desc, RangeMode mode, const Deadline& deadline);
  Status TakeRangeWaiting(Description* desc, RangeMode mode, Pos start, Pos end,
                          const Deadline& deadline);
  RangeTable& KernelTable(Description* desc);
  RangeTable& PendingTable(Description* desc);
  template <typename Busy>
  Status WaitInProcess(std::unique_lock<std::mutex>* hold, const Deadline& deadline,
                       Busy&& busy);
  bool InFlight(Description* desc, Pos start, Pos end);
  template <typename Runs>
  Status SetBack(Description* desc, const Runs& runs, size_t granted);
  template <typename Runs>
  Status SetRuns(Description* desc, const Runs& runs);
  Status Lower(Description* desc, RangeMode mode, Pos start, Pos end);
  Status LowerWhole(Description* desc, RangeMode mode);
  void Record(Description* desc, RangeMode mode, Pos start, Pos end, int delta);
  void DropIfUnused(const InodeKey& key);
  Description* NewLinked(UniqueFd fd);
  void UnrefLocked(Description* desc);
  void Retire(Description* desc);
  void Recycle(Description* desc);

  const bool ofd_;
  std::mutex mutex_;
  std::condition_variable released_;  // in-process waiters (WaitInProcess)
  std::map<InodeKey, Inode> inodes_;
  // Every Description with references, inherited ones included, linked
  // through prev/next and owned here (NewLinked, Recycle).
  Description* live_ = nullptr;
  // The last Description let go of, cleared, for the next one to reuse: a
  // lock and its release on a lone handle then allocate nothing.
  std::unique_ptr<Description> spare_;
  unsigned long gives_ = 0;  // range holds given back, ever
  // OFD locks: the one live Description adopted while no other was live,
  // whose inode nobody has needed yet (so no fstat was paid for it). Match
  // compares against it too; Index lists it in inodes_.
  Description* unindexed_ = nullptr;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_REGISTRY_H_
