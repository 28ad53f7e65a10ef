#include "wait_timer.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

#include "process.h"

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

// A forked child has only the thread that forked, which is not waiting:
// holds taken by the parent's other threads do not exist there, so the
// child gets the caller's disposition back and a mutex nobody holds.
void PrepareFork() { g_handler_mutex.lock(); }
void ParentAfterFork() { g_handler_mutex.unlock(); }
void ChildAfterFork() {
  g_handler_mutex.unlock();
  if (g_handler_users > 0) {
    ::sigaction(TimerSignal(), &g_saved_action, nullptr);
    g_handler_users = 0;
  }
}

const bool g_fork_handlers_registered =
    ::pthread_atfork(PrepareFork, ParentAfterFork, ChildAfterFork) == 0;

// The thread's POSIX timer, created by its first timed wait that has to
// block and kept, disarmed, until the thread ends. Arming and disarming a
// kept timer costs about half of creating and deleting one per wait, and
// the disarm is on the path between the grant and the caller. Timers are not
// inherited by fork: a child's thread makes its own and never touches the
// parent's id, which may name a timer of the child's.
class ResidentTimer final {
 public:
  ResidentTimer() = default;
  ResidentTimer(const ResidentTimer&) = delete;
  ResidentTimer& operator=(const ResidentTimer&) = delete;
  ~ResidentTimer() {
    if (ours()) ::timer_delete(id_);
  }

  // The timer, created for the calling thread if need be; fails with the
  // errno of timer_create (EAGAIN when no queued signal is left).
  Status Get(timer_t* id) {
    if (!ours()) {
      sigevent event{};
      event.sigev_notify = SIGEV_THREAD_ID;
      event.sigev_signo = TimerSignal();
#ifdef sigev_notify_thread_id
      event.sigev_notify_thread_id = static_cast<pid_t>(::syscall(SYS_gettid));
#else
      event._sigev_un._tid = static_cast<pid_t>(::syscall(SYS_gettid));
#endif
      if (::timer_create(CLOCK_MONOTONIC, &event, &id_) != 0) return Status::Error(errno);
      pid_ = CurrentPid();
    }
    *id = id_;
    return Status::Ok();
  }

 private:
  bool ours() const { return pid_ != 0 && pid_ == CurrentPid(); }

  pid_t pid_ = 0;  // the process that created id_; 0 before that
  timer_t id_{};
};

thread_local ResidentTimer t_timer;

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

  const Status timer = t_timer.Get(&timer_);
  if (!timer.ok()) return timer;

  itimerspec spec{};
  spec.it_value = deadline.when();
  spec.it_interval.tv_nsec = kRefireNanos;
  if (::timer_settime(timer_, TIMER_ABSTIME, &spec, nullptr) != 0) return Status::Error(errno);
  armed_ = true;
  return Status::Ok();
}

ThreadWaitTimer::~ThreadWaitTimer() {
  const int saved_errno = errno;
  // Disarming the timer first means no further signal can be generated; one
  // already generated was delivered to the no-op handler on the way back
  // from the kernel, because the signal is unblocked in this thread.
  if (armed_) {
    const itimerspec disarmed{};
    ::timer_settime(timer_, 0, &disarmed, nullptr);
  }
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
