// Bounded blocking waits without polling.
//
// A lock call that may block is bounded by a Deadline as follows: one
// non-blocking attempt first (no timer at all when the lock is free); if the
// lock is busy, a POSIX timer aimed at the calling thread (SIGEV_THREAD_ID)
// is armed for the absolute deadline and the blocking system call is made.
// When the timer fires, its signal interrupts the call with EINTR and the wait
// ends with ETIMEDOUT. The timer re-fires every kRefireNanos after the
// deadline, so a signal that lands in the instant before the blocking call
// starts cannot leave the thread blocked: the next one interrupts it.
//
// The timer signal (TimerSignal()) gets a no-op handler only while at least
// one thread of the process is in such a wait; the previous disposition and
// the thread's signal mask are restored afterwards, so the caller's alarm(),
// SIGALRM handler and every other disposition stay as they were. An instance
// of the signal that the caller had blocked and left pending is raised again
// once the mask is back, so it stays pending.
//
// When the timer cannot be created (timer_create needs a queued-signal slot,
// which RLIMIT_SIGPENDING may deny), the wait is not started at all: it fails
// at once with kCannotArmErrno rather than block without a bound or answer
// "busy" without having waited.
#ifndef FILE_LOCKER_SRC_WAIT_TIMER_H_
#define FILE_LOCKER_SRC_WAIT_TIMER_H_

#include <errno.h>
#include <time.h>

#include "deadline.h"
#include "status.h"

namespace locker {

// The real-time signal borrowed for timed waits (SIGRTMIN + 5).
int TimerSignal();

// Holds the timer signal's no-op handler for its scope, counted together
// with ThreadWaitTimer's holds: for a thread woken by pthread_kill(thread,
// TimerSignal()) instead of by a timer. Does not touch the signal mask;
// the thread unblocks the signal itself while it may be woken, and blocks
// it again before the hold ends. One instance belongs to one thread.
class TimerSignalHold final {
 public:
  TimerSignalHold();
  TimerSignalHold(const TimerSignalHold&) = delete;
  TimerSignalHold& operator=(const TimerSignalHold&) = delete;
  ~TimerSignalHold();
  // Ok, or the errno of sigaction (then nothing is held).
  Status status() const { return status_; }

 private:
  Status status_ = Status::Ok();
};

// Arms the calling thread's timer for one blocking call. Scoped: the
// destructor disarms it and puts the signal disposition and mask back. The
// timer itself is created by the thread's first such call and kept until the
// thread ends, so a thread that ever waited with a bound holds one POSIX
// timer (and one of its RLIMIT_SIGPENDING slots). One instance
// belongs to the thread that created it; distinct threads may each hold one.
class ThreadWaitTimer final {
 public:
  ThreadWaitTimer() = default;
  ThreadWaitTimer(const ThreadWaitTimer&) = delete;
  ThreadWaitTimer& operator=(const ThreadWaitTimer&) = delete;
  ~ThreadWaitTimer();

  // Starts the timer for deadline (requires !deadline.is_never()). Does not
  // block. Fails with the errno of timer_create (the thread's first arm
  // only), timer_settime or sigaction.
  Status Arm(const Deadline& deadline);

  // The timer a wait uses (see ResidentTimer in wait_timer.cc).
  struct Loan {
    timer_t id{};
    bool resident = false;     // the thread's kept timer, else one of its own
    unsigned generation = 0;   // the thread's fork count when lent
  };

 private:
  bool handler_held_ = false;
  bool unblocked_ = false;
  bool reraise_ = false;
  bool lent_ = false;
  Loan loan_;
};

// What a timed wait on a busy lock fails with, at once, when its timer
// cannot be armed: timer_create fails with EAGAIN when the user has no queued
// signals left (RLIMIT_SIGPENDING, e.g. `ulimit -i 0`), and EAGAIN is
// EWOULDBLOCK, which would read as "busy" although nothing waited. ENOLCK
// ("no locks available": a resource for the wait ran out) cannot be read as
// busy or timed out.
constexpr int kCannotArmErrno = ENOLCK;

// Runs attempt(blocking) -- which returns Ok when the lock was granted or
// the error, with every "busy" outcome reported as EWOULDBLOCK -- until it
// succeeds, fails, or the deadline passes.
//
// Returns Ok; EWOULDBLOCK when the deadline is immediate (one non-blocking
// try) and the lock is busy; ETIMEDOUT when a positive deadline passed;
// EINTR when a signal other than the timer's interrupted the wait (the caller
// runs its handlers and calls again with the same deadline); kCannotArmErrno
// when the lock is busy and the wait's timer cannot be armed; or the errno of
// a hard failure. Never EWOULDBLOCK or ETIMEDOUT before the deadline. With
// Deadline::Never() it makes one blocking attempt.
template <typename Attempt>
Status LockBefore(const Deadline& deadline, Attempt&& attempt) {
  if (deadline.is_never()) return attempt(true);
  Status status = attempt(false);
  if (status.err() != EWOULDBLOCK) return status;
  if (deadline.is_immediate()) return status;
  if (deadline.Expired()) return Status::Error(ETIMEDOUT);

  ThreadWaitTimer timer;
  if (!timer.Arm(deadline).ok()) return Status::Error(kCannotArmErrno);
  status = attempt(true);
  if (status.err() == EINTR && deadline.Expired()) return Status::Error(ETIMEDOUT);
  return status;
}

}  // namespace locker

#endif  // FILE_LOCKER_SRC_WAIT_TIMER_H_
