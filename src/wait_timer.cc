#include "wait_timer.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

namespace locker {

namespace {

// After the deadline the timer keeps firing at this period until disarmed,
// which bounds the cost of the race in which the first expiry is handled just
// before the blocking system call starts.
constexpr long kRefireNanos = 1000000L;  // 1 ms

void IgnoreTimerSignal(int) {}

// Process-wide: the timer signal's handler is installed while at least one
// thread waits, and the disposition found before is restored by the last.
std::mutex g_handler_mutex;
int g_handler_users = 0;
struct sigaction g_saved_action;

int AcquireHandler() {
  std::lock_guard<std::mutex> hold(g_handler_mutex);
  if (g_handler_users == 0) {
    struct sigaction action {};
    action.sa_handler = IgnoreTimerSignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: the blocking call must see EINTR
    if (::sigaction(TimerSignal(), &action, &g_saved_action) != 0) return errno;
  }
  ++g_handler_users;
  return 0;
}

void ReleaseHandler() {
  std::lock_guard<std::mutex> hold(g_handler_mutex);
  if (--g_handler_users == 0) ::sigaction(TimerSignal(), &g_saved_action, nullptr);
}

// A POSIX timer aimed at the calling thread; fails with the errno of
// timer_create (EAGAIN when no queued signal is left).
Status CreateThreadTimer(timer_t* id) {
  sigevent event{};
  event.sigev_notify = SIGEV_THREAD_ID;
  event.sigev_signo = TimerSignal();
#ifdef sigev_notify_thread_id
  event.sigev_notify_thread_id = static_cast<pid_t>(::syscall(SYS_gettid));
#else
  event._sigev_un._tid = static_cast<pid_t>(::syscall(SYS_gettid));
#endif
  return ::timer_create(CLOCK_MONOTONIC, &event, id) == 0 ? Status::Ok()
                                                          : Status::Error(errno);
}

// The thread's POSIX timer, created by its first timed wait that has to
// block and kept, disarmed, until the thread ends. Arming and disarming a
// kept timer costs about half of creating and deleting one per wait, and
// the disarm is on the path between the grant and the caller.
//
// It serves one wait at a time: a wait nested in another on the same thread
// (a Perl handler run from the C signal handler under PERL_SIGNALS=unsafe,
// while the outer wait is blocked) gets a timer of its own, so the outer
// one keeps its deadline. Timers are not inherited by fork: the child
// handler makes the forking thread forget the parent's timer, whose id may
// name one of the child's, and what was lent before the fork is never
// handed back there.
class ResidentTimer final {
 public:
  ResidentTimer() = default;
  ResidentTimer(const ResidentTimer&) = delete;
  ResidentTimer& operator=(const ResidentTimer&) = delete;
  ~ResidentTimer() {
    if (created_) ::timer_delete(id_);
  }

  // A timer for one wait: the thread's own unless it is lent already.
  Status Lend(ThreadWaitTimer::Loan* loan) {
    loan->generation = generation_;
    loan->resident = !lent_;
    if (!loan->resident) return CreateThreadTimer(&loan->id);
    if (!created_) {
      const Status status = CreateThreadTimer(&id_);
      if (!status.ok()) return status;
      created_ = true;
    }
    lent_ = true;
    loan->id = id_;
    return Status::Ok();
  }

  // Takes back what Lend gave once the wait is over: the thread's timer
  // disarmed, or a timer of its own deleted.
  void Return(const ThreadWaitTimer::Loan& loan) {
    if (loan.generation != generation_) return;  // lent before a fork
    if (loan.resident) {
      const itimerspec disarmed{};
      ::timer_settime(id_, 0, &disarmed, nullptr);
      lent_ = false;
    } else {
      ::timer_delete(loan.id);
    }
  }

  // In a forked child: the timer, and any lent, are the parent's.
  void Forget() {
    created_ = false;
    lent_ = false;
    ++generation_;
  }

 private:
  bool created_ = false;
  bool lent_ = false;
  unsigned generation_ = 0;  // forks seen by this thread
  timer_t id_{};
};

thread_local ResidentTimer t_timer;

// A forked child has only the thread that forked: holds taken by the
// parent's other threads do not exist there, so the child gets the caller's
// disposition back and a mutex nobody holds, and the forking thread forgets
// the parent's timer.
void PrepareFork() { g_handler_mutex.lock(); }
void ParentAfterFork() { g_handler_mutex.unlock(); }
void ChildAfterFork() {
  t_timer.Forget();
  g_handler_mutex.unlock();
  if (g_handler_users > 0) {
    ::sigaction(TimerSignal(), &g_saved_action, nullptr);
    g_handler_users = 0;
  }
}

const bool g_fork_handlers_registered =
    ::pthread_atfork(PrepareFork, ParentAfterFork, ChildAfterFork) == 0;

}  // namespace

int TimerSignal() { return SIGRTMIN + 5; }

TimerSignalHold::TimerSignalHold() {
  (void)g_fork_handlers_registered;
  const int err = AcquireHandler();
  if (err != 0) status_ = Status::Error(err);
}

TimerSignalHold::~TimerSignalHold() {
  if (status_.ok()) ReleaseHandler();
}

Status ThreadWaitTimer::Arm(const Deadline& deadline) {
  int err = AcquireHandler();
  if (err != 0) return Status::Error(err);
  handler_held_ = true;

  // A pending instance can only be one the caller blocked: unblocking would
  // hand it to our no-op handler, so remember to raise it again afterwards.
  sigset_t set, old;
  if (::sigpending(&set) == 0 && sigismember(&set, TimerSignal()) == 1) {
    reraise_ = true;
  }
  sigemptyset(&set);
  sigaddset(&set, TimerSignal());
  err = ::pthread_sigmask(SIG_UNBLOCK, &set, &old);
  if (err != 0) return Status::Error(err);
  unblocked_ = sigismember(&old, TimerSignal()) == 1;

  const Status timer = t_timer.Lend(&loan_);
  if (!timer.ok()) return timer;
  lent_ = true;

  itimerspec spec{};
  spec.it_value = deadline.when();
  spec.it_interval.tv_nsec = kRefireNanos;
  if (::timer_settime(loan_.id, TIMER_ABSTIME, &spec, nullptr) != 0) return Status::Error(errno);
  return Status::Ok();
}

ThreadWaitTimer::~ThreadWaitTimer() {
  const int saved_errno = errno;
  // Disarming the timer first means no further signal can be generated; one
  // already generated was delivered to the no-op handler on the way back
  // from the kernel, because the signal is unblocked in this thread.
  if (lent_) t_timer.Return(loan_);
  if (unblocked_) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, TimerSignal());
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    if (reraise_) ::pthread_kill(::pthread_self(), TimerSignal());  // pending again
  }
  if (handler_held_) ReleaseHandler();
  errno = saved_errno;
}

}  // namespace locker
