#include "waiter.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/file.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <utility>

#include "process.h"
#include "unique_fd.h"
#include "wait_timer.h"

namespace locker {

namespace {

// How often Cancel() sends the signal again while the thread has not
// finished: bounds the cost of a signal that arrived just before the
// blocking call, as the timer's re-fire does for timed waits.
constexpr auto kResendPeriod = std::chrono::milliseconds(1);

// Classic POSIX locks report a wait for another owner of this process with
// no deadline as EDEADLK, since only another thread could end it. A waiter
// is such another thread's wait, so an unbounded one is given this far
// deadline instead (about three years).
constexpr double kFarDeadline = 1e8;

// The descriptor(s) that tell the end of the wait: one eventfd, or a pipe.
struct Signal {
  UniqueFd read_end;
  UniqueFd write_end;  // pipe only

  Status Make() {
#ifdef __linux__
    read_end.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!read_end.valid()) return Status::Error(errno);
#else
    int fds[2];
    if (::pipe(fds) != 0) return Status::Error(errno);
    read_end.reset(fds[0]);
    write_end.reset(fds[1]);
    for (int fd : fds) {
      if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
          ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        return Status::Error(errno);
      }
    }
#endif
    return Status::Ok();
  }

  // Makes read_end readable. Called once per wait; cannot block.
  void Raise() const {
#ifdef __linux__
    const uint64_t one = 1;
    while (::write(read_end.get(), &one, sizeof one) < 0 && errno == EINTR) {
    }
#else
    const char one = 1;
    while (::write(write_end.get(), &one, 1) < 0 && errno == EINTR) {
    }
#endif
  }
};

void SetTimerSignalMask(int how) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, TimerSignal());
  ::pthread_sigmask(how, &set, nullptr);
}

}  // namespace

struct Waiter::State {
  WaitRequest request;
  UniqueFd target;  // duplicate of the caller's descriptor
  Signal signal;
  pid_t owner_pid = 0;

  // Written by the thread until `done`, then by the owner only.
  Lock lock;
  Status status = Status::Error(EINPROGRESS);

  std::mutex mutex;
  std::condition_variable finished;
  std::atomic<bool> done{false};  // stored under mutex, read without it too
  bool cancelled = false;         // GUARDED_BY(mutex)

  bool threaded = false;
  bool joined = false;
  bool taken = false;
  pthread_t thread{};

  // The blocking attempt for the request, on any thread.
  Status Attempt(const Deadline& deadline) {
    const WaitRequest& r = request;
    lock.set_coherent(r.coherent);
    if (target.valid()) {
      return r.whole ? lock.AcquireDescriptor(target.get(), r.mode, deadline)
                     : lock.AcquireDescriptor(target.get(), r.mode, r.start, r.end, deadline);
    }
    return r.whole ? lock.AcquirePath(r.path, r.mode, r.options, deadline)
                   : lock.AcquirePath(r.path, r.mode, r.start, r.end, r.options, deadline);
  }

  bool Cancelled() {
    std::lock_guard<std::mutex> hold(mutex);
    return cancelled;
  }

  // The waiting thread's body. Every signal but the timer's is blocked here.
  void Run() {
    TimerSignalHold handler;
    Status result = handler.status();
    if (result.ok()) {
      Deadline deadline = request.deadline;
      if (deadline.is_never() && !request.whole && !UsingOfdLocks()) {
        deadline = Deadline::After(kFarDeadline);
      }
      SetTimerSignalMask(SIG_UNBLOCK);
      for (;;) {
        if (Cancelled()) {
          result = Status::Error(ECANCELED);
          break;
        }
        // EINTR: Cancel()'s signal, or a stray one; the flag tells.
        result = Attempt(deadline);
        if (result.err() != EINTR) break;
      }
    }
    // The outcome first, so the owner learns it as soon as possible; from
    // here on the thread touches nothing the owner may use.
    {
      std::lock_guard<std::mutex> hold(mutex);
      status = result;
      done.store(true, std::memory_order_release);
    }
    finished.notify_all();
    signal.Raise();
    // The owner, just woken, is often queued on this CPU behind the rest of
    // this thread's life (its exit included): let it run first.
    ::sched_yield();
    // No signal is sent once `done` is set. One still in flight stays
    // pending once blocked and dies with the thread, so the handler can
    // then safely be given back.
    if (handler.status().ok()) SetTimerSignalMask(SIG_BLOCK);
  }

  static void* Main(void* arg) {
    static_cast<State*>(arg)->Run();
    return nullptr;
  }

  // Starts the thread with every signal blocked (it inherits the mask).
  Status Spawn() {
    pthread_attr_t attr;
    int err = ::pthread_attr_init(&attr);
    if (err != 0) return Status::Error(err);
    const size_t stack = std::max<size_t>(kStackSize, PTHREAD_STACK_MIN);
    (void)::pthread_attr_setstacksize(&attr, stack);
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    err = ::pthread_create(&thread, &attr, Main, this);
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::pthread_attr_destroy(&attr);
    if (err != 0) return Status::Error(err);
    threaded = true;
    return Status::Ok();
  }

  void Join() {
    if (threaded && !joined) {
      ::pthread_join(thread, nullptr);
      joined = true;
    }
  }
};

Waiter::Waiter(std::unique_ptr<State> state) : state_(std::move(state)) {}

Status Waiter::Start(const WaitRequest& request, std::unique_ptr<Waiter>* out) {
  auto state = std::make_unique<State>();
  state->request = request;
  state->owner_pid = CurrentPid();
  if (request.fd >= 0) {
    state->target.reset(::fcntl(request.fd, F_DUPFD_CLOEXEC, 0));
    if (!state->target.valid()) return Status::Error(errno);
  }
  Status status = state->signal.Make();
  if (!status.ok()) return status;

  // A free lock (or a request that may not wait) is settled here.
  status = state->Attempt(Deadline::Now());
  const bool may_wait = (request.mode & LOCK_NB) == 0 && !request.deadline.is_immediate();
  if (status.err() == EWOULDBLOCK && may_wait) {
    status = state->Spawn();
    if (!status.ok()) return status;
  } else {
    state->status = status;
    state->done.store(true, std::memory_order_release);
    state->signal.Raise();
  }
  out->reset(new Waiter(std::move(state)));
  return Status::Ok();
}

Waiter::~Waiter() {
  if (InOwnerProcess()) {
    Cancel();
    return;
  }
  // A forked child's copy: no thread here. Close this process's copies of
  // the descriptors; the rest may have been mid-update at the fork unless
  // the wait had ended, so then it is left alone.
  state_->signal.read_end.reset();
  state_->signal.write_end.reset();
  state_->target.reset();
  if (!state_->done.load(std::memory_order_acquire)) (void)state_.release();
}

int Waiter::fd() const { return state_->signal.read_end.get(); }

bool Waiter::InOwnerProcess() const { return state_->owner_pid == CurrentPid(); }

bool Waiter::threaded() const { return state_->threaded; }

bool Waiter::Ended() const {
  return InOwnerProcess() && state_->done.load(std::memory_order_acquire);
}

Status Waiter::Finish(Lock* lock) {
  if (!InOwnerProcess()) return Status::Error(EPERM);
  if (!Ended()) return Status::Error(EINPROGRESS);
  // The thread no longer touches the outcome once it has ended, so it is
  // joined later (Cancel(), the destructor), off the hand-off's path.
  State& s = *state_;
  if (s.taken) return Status::Error(EALREADY);
  if (!s.status.ok()) return s.status;
  *lock = std::move(s.lock);
  s.taken = true;
  return s.status;
}

void Waiter::Cancel() {
  if (!InOwnerProcess()) return;
  State& s = *state_;
  bool was_done;
  {
    std::unique_lock<std::mutex> hold(s.mutex);
    was_done = s.done.load(std::memory_order_relaxed);
    if (!was_done) {
      s.cancelled = true;
      while (!s.done.load(std::memory_order_relaxed)) {
        ::pthread_kill(s.thread, TimerSignal());
        s.finished.wait_for(hold, kResendPeriod);
      }
    }
  }
  s.Join();
  if (s.taken) return;
  if (s.status.ok()) {
    s.lock.Release();
    s.status = Status::Error(ECANCELED);
  } else if (!was_done) {
    s.status = Status::Error(ECANCELED);
  }
}

}  // namespace locker
