// Waiter: a lock acquisition that does not block its caller.
//
// Start() tries the lock once, without waiting, on the calling thread. If
// it is busy and the request allows waiting, Start() creates a thread of
// its own that takes the lock through a Lock -- and so through the
// Registry, blocking in the kernel (flock(2), F_OFD_SETLKW or F_SETLKW) on
// the open file description the lock will belong to, exactly as a blocking
// Lock::Acquire* call would. When the wait ends (granted, failed, timed out
// or cancelled) the outcome is recorded and fd() becomes readable, and stays
// readable: it is an eventfd (a pipe where there is none) that is never read.
// Finish() then moves the granted lock to its owner, once.
//
// Interruption. Cancel(), and the destructor, set a flag and send the
// engine's timer signal (TimerSignal()) to the waiting thread with
// pthread_kill(), again every millisecond until the thread says it has
// finished: a signal that lands just before the blocking call starts is
// followed by another that interrupts it. The thread is created with every
// signal blocked and unblocks only the timer signal, whose no-op handler it
// holds while it runs (TimerSignalHold), so no handler of the caller's ever
// runs on it and the caller's other dispositions and masks are untouched.
// A lock granted in the race with Cancel() is released before Cancel()
// returns. No thread or descriptor outlives the Waiter: Cancel() and the
// destructor join the thread (Finish() does not wait for it to exit, to keep
// the hand-off short; the thread has nothing left to do but exit).
//
// Cost: one thread per pending wait (kStackSize of address space, a few
// pages of it touched), one eventfd, and the lock's own descriptor. A free
// lock costs no thread at all.
//
// Fork. Only the process that called Start() owns the wait. The thread does
// not exist in a forked child, and the child's copy never signals, joins,
// cancels or takes anything: Ended() is false there, Finish() gives EPERM,
// Cancel() does nothing, and the destructor closes the child's copies of the
// descriptors (if the wait had not ended at the fork, the child's copy of
// the lock's own descriptor stays open until the child exits, since the
// thread that held it is gone).
//
// Thread-compatible: one thread at a time calls the member functions; the
// waiting thread is internal.
#ifndef FILE_LOCKER_SRC_WAITER_H_
#define FILE_LOCKER_SRC_WAITER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "deadline.h"
#include "lock.h"
#include "lock_path.h"
#include "range_table.h"
#include "status.h"

namespace locker {

// What to lock: the arguments of Lock::AcquireDescriptor / AcquirePath.
struct WaitRequest {
  bool whole = true;        // whole file (flock(2)) or [start, end)
  int fd = -1;              // a caller's descriptor, or -1 to open path
  std::string path;         // used when fd < 0
  PathOptions options;      // used when fd < 0
  int mode = 0;             // LOCK_SH or LOCK_EX, optionally | LOCK_NB
  Pos start = 0;
  Pos end = kRangeEnd;
  Deadline deadline = Deadline::Never();  // counted from the caller's clock
  bool coherent = false;    // Lock::set_coherent
};

class Waiter final {
 public:
  // Address space reserved for each waiting thread's stack.
  static constexpr size_t kStackSize = 256 * 1024;

  // Starts acquiring request's lock. A caller's descriptor is duplicated
  // before Start() returns, so the caller may close it at once. Does not
  // block (opening PATH never blocks). Returns Ok with *out set -- the
  // outcome of the lock itself, including open errors, comes from Finish()
  // -- or the errno of duplicating the descriptor (EBADF), of making the
  // eventfd, or of creating the thread (EAGAIN).
  static Status Start(const WaitRequest& request, std::unique_ptr<Waiter>* out);

  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  // In the owner process: Cancel(), which releases a granted lock that
  // Finish() did not hand out. Elsewhere: closes this process's copies.
  ~Waiter();

  // Readable once the wait has ended (never read by the engine).
  int fd() const;

  // Whether the wait has ended. Never blocks. False outside the owner
  // process.
  bool Ended() const;

  // Requires Ended(). On a grant moves the lock
  // into *lock (released first if it held one) and returns Ok, once. Later
  // calls return EALREADY. A failed wait returns its error every time:
  // ETIMEDOUT, ECANCELED, EWOULDBLOCK (LOCK_NB or an immediate deadline),
  // the open error (ENOENT, ELOOP, ...) or the lock error (EBADF, EDEADLK,
  // ...). EINPROGRESS before the end; EPERM outside the owner process.
  Status Finish(Lock* lock);

  // Ends the wait now and joins the thread: an unfinished wait ends with
  // ECANCELED; a granted lock not yet handed out is released and the
  // outcome becomes ECANCELED; a wait that had already failed keeps its
  // error; a lock handed out stays with its owner. Blocks only until the
  // thread has left the kernel. Does nothing outside the owner process.
  void Cancel();

  // True in the process that called Start().
  bool InOwnerProcess() const;

  // Whether a thread was started (false when the first try settled it).
  bool threaded() const;

 private:
  struct State;
  explicit Waiter(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_WAITER_H_
