// Tests for Flock (whole-file flock(2) locks with a deadline) and the timed
// waits behind it (LockBefore, ThreadWaitTimer).
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "deadline.h"
#include "flock_lock.h"
#include "status.h"
#include "test_util.h"
#include "unique_fd.h"
#include "wait_timer.h"

namespace locker {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// POSIX timers this process has now (/proc/self/timers lists them), or -1.
int CountTimers() {
  std::ifstream timers("/proc/self/timers");
  if (!timers) return -1;
  int count = 0;
  std::string line;
  while (std::getline(timers, line)) count += line.rfind("ID:", 0) == 0;
  return count;
}

// fd_ is the descriptor that takes the first lock; OpenAgain() gives the
// contenders.
class FlockTest : public TempFileTest {
 protected:
  FlockTest() : TempFileTest("lock") {}

  void SetUp() override {
    TempFileTest::SetUp();
    if (HasFatalFailure()) return;
    struct stat st;
    ASSERT_EQ(0, ::fstat(fd_.get(), &st));
    ino_ = st.st_ino;
  }

  ino_t ino_ = 0;
};

TEST_F(FlockTest, ValidOperations) {
  static_assert(IsValidFlockOperation(LOCK_SH), "");
  static_assert(IsValidFlockOperation(LOCK_EX | LOCK_NB), "");
  static_assert(IsValidFlockOperation(LOCK_UN), "");
  static_assert(IsValidFlockOperation(LOCK_UN | LOCK_NB), "");
  static_assert(!IsValidFlockOperation(0), "");
  static_assert(!IsValidFlockOperation(LOCK_NB), "");
  static_assert(!IsValidFlockOperation(LOCK_SH | LOCK_EX), "");
  EXPECT_TRUE(Flock(fd_.get(), LOCK_SH, Deadline::Never()).ok());
  EXPECT_TRUE(Flock(fd_.get(), LOCK_EX | LOCK_NB, Deadline::Never()).ok());
  EXPECT_TRUE(Flock(fd_.get(), LOCK_UN, Deadline::Never()).ok());
  EXPECT_TRUE(Flock(fd_.get(), LOCK_UN | LOCK_NB, Deadline::Now()).ok());
}

TEST_F(FlockTest, InvalidOperationsAreEinval) {
  const int bad[] = {0,
                     LOCK_NB,
                     LOCK_SH | LOCK_EX,
                     LOCK_SH | LOCK_UN,
                     LOCK_EX | LOCK_UN,
                     LOCK_SH | LOCK_EX | LOCK_NB,
                     16,
                     LOCK_EX | 32,
                     -1};
  for (const int op : bad) {
    SCOPED_TRACE("op " + std::to_string(op));
    EXPECT_ERR(EINVAL, Flock(fd_.get(), op, Deadline::Never()));
    EXPECT_ERR(EINVAL, Flock(fd_.get(), op, Deadline::Now()));
    EXPECT_ERR(EINVAL, Flock(fd_.get(), op, Deadline::After(1)));
    EXPECT_ERR(EINVAL,
               Flock(-1, op, Deadline::Never()));  // checked before the fd
  }
}

TEST_F(FlockTest, BadDescriptorIsEbadf) {
  EXPECT_ERR(EBADF, Flock(-1, LOCK_EX | LOCK_NB, Deadline::Never()));
  EXPECT_ERR(EBADF, Flock(-1, LOCK_SH, Deadline::Never()));
  EXPECT_ERR(EBADF, Flock(-1, LOCK_EX, Deadline::After(5)));
  EXPECT_ERR(EBADF, Flock(-1, LOCK_EX, Deadline::Now()));
  EXPECT_ERR(EBADF, Flock(-1, LOCK_UN, Deadline::Never()));
}

TEST_F(FlockTest, SharedLocksCoexist) {
  UniqueFd other = OpenAgain();
  ASSERT_TRUE(Flock(fd_.get(), LOCK_SH, Deadline::Never()).ok());
  EXPECT_TRUE(Flock(other.get(), LOCK_SH | LOCK_NB, Deadline::Never()).ok());
  EXPECT_TRUE(Flock(other.get(), LOCK_SH, Deadline::Now()).ok());
  EXPECT_ERR(EWOULDBLOCK,
             Flock(other.get(), LOCK_EX | LOCK_NB, Deadline::Never()));
}

TEST_F(FlockTest, TwoDescriptorsInOneProcessConflict) {
  UniqueFd other = OpenAgain();
  ASSERT_TRUE(Flock(fd_.get(), LOCK_EX, Deadline::Never()).ok());
  EXPECT_ERR(EWOULDBLOCK,
             Flock(other.get(), LOCK_EX | LOCK_NB, Deadline::Never()));
  EXPECT_ERR(EWOULDBLOCK,
             Flock(other.get(), LOCK_SH | LOCK_NB, Deadline::Never()));
  // LOCK_NB means one try whatever the deadline.
  EXPECT_ERR(EWOULDBLOCK,
             Flock(other.get(), LOCK_EX | LOCK_NB, Deadline::After(5)));
  // An immediate deadline is one non-blocking try too.
  EXPECT_ERR(EWOULDBLOCK, Flock(other.get(), LOCK_EX, Deadline::Now()));
  EXPECT_ERR(EWOULDBLOCK, Flock(other.get(), LOCK_SH, Deadline::After(0)));

  ASSERT_TRUE(Flock(fd_.get(), LOCK_UN, Deadline::Never()).ok());
  EXPECT_TRUE(Flock(other.get(), LOCK_EX, Deadline::Now()).ok());
  EXPECT_ERR(EWOULDBLOCK,
             Flock(fd_.get(), LOCK_SH | LOCK_NB, Deadline::Never()));
}

TEST_F(FlockTest, TimedWaitEndsWithEtimedout) {
  UniqueFd other = OpenAgain();
  ASSERT_TRUE(Flock(fd_.get(), LOCK_EX, Deadline::Never()).ok());
  const int timers = CountTimers();

  // In a thread of its own, whose timer goes when the thread does.
  Status status = Status::Ok();
  long long elapsed = 0;
  std::thread([&] {
    const auto start = steady_clock::now();
    status = Flock(other.get(), LOCK_EX, Deadline::After(0.2));
    elapsed = Since(start);
  }).join();
  EXPECT_ERR(ETIMEDOUT, status);
  EXPECT_GE(elapsed, 200);
  EXPECT_LT(elapsed, 5000);
  EXPECT_EQ(timers, CountTimers()) << "a POSIX timer outlived its thread";

  // The holder's lock is untouched and the waiter holds nothing.
  EXPECT_ERR(EWOULDBLOCK,
             Flock(other.get(), LOCK_SH | LOCK_NB, Deadline::Never()));
  ASSERT_TRUE(Flock(fd_.get(), LOCK_UN, Deadline::Never()).ok());
  EXPECT_TRUE(Flock(fd_.get(), LOCK_EX | LOCK_NB, Deadline::Never()).ok());
}

TEST_F(FlockTest, AThreadKeepsOneTimerHoweverManyWaits) {
  UniqueFd other = OpenAgain();
  ASSERT_OK(Flock(fd_.get(), LOCK_EX, Deadline::Never()));
  const int before = CountTimers();
  ASSERT_GE(before, 0) << "no /proc/self/timers";
  std::vector<int> counts;
  std::thread([&] {
    for (int i = 0; i < 5; ++i) {
      EXPECT_ERR(ETIMEDOUT, Flock(other.get(), LOCK_EX, Deadline::After(0.01)));
      counts.push_back(CountTimers());
    }
  }).join();
  // The first wait made the thread's timer; the others reused it.
  ASSERT_EQ(5u, counts.size());
  for (int count : counts) EXPECT_EQ(before + 1, count);
  EXPECT_EQ(before, CountTimers()) << "a POSIX timer outlived its thread";
  // A forked child's thread makes its own and leaves the parent's alone.
  std::thread([&] {
    EXPECT_ERR(ETIMEDOUT, Flock(other.get(), LOCK_EX, Deadline::After(0.01)));
    const pid_t child = ::fork();
    if (child == 0) {
      const bool timed_out =
          Flock(other.get(), LOCK_EX, Deadline::After(0.01)).err() == ETIMEDOUT;
      ::_exit(timed_out && CountTimers() == 1 ? 0 : 1);
    }
    int wstatus = 0;
    ASSERT_EQ(child, ::waitpid(child, &wstatus, 0));
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    EXPECT_ERR(ETIMEDOUT, Flock(other.get(), LOCK_EX, Deadline::After(0.01)));
    EXPECT_EQ(before + 1, CountTimers());
  }).join();
  EXPECT_EQ(before, CountTimers());
}

TEST_F(FlockTest, WaiterGetsTheLockWhenTheHolderUnlocks) {
  UniqueFd other = OpenAgain();
  ASSERT_TRUE(Flock(fd_.get(), LOCK_EX, Deadline::Never()).ok());
  const int timers = CountTimers();

  std::promise<void> about_to_wait;
  std::atomic<int> waited_ms{-1};
  std::thread waiter([&] {
    about_to_wait.set_value();
    const auto start = steady_clock::now();
    const Status status = Flock(other.get(), LOCK_EX, Deadline::After(10));
    waited_ms = static_cast<int>(Since(start));
    EXPECT_TRUE(status.ok()) << ErrName(status.err());
  });
  about_to_wait.get_future().wait();
  EXPECT_TRUE(WaitForFlockWaiter(ino_)) << "the waiter never blocked";
  ASSERT_TRUE(Flock(fd_.get(), LOCK_UN, Deadline::Never()).ok());
  waiter.join();

  EXPECT_GE(waited_ms, 0);
  EXPECT_LT(waited_ms, 10000);
  EXPECT_ERR(EWOULDBLOCK,
             Flock(fd_.get(), LOCK_SH | LOCK_NB, Deadline::Never()));
  EXPECT_EQ(timers, CountTimers()) << "a POSIX timer was left behind";
}

TEST_F(FlockTest, TimedWaitsInSeveralThreadsEachTimeOut) {
  ASSERT_TRUE(Flock(fd_.get(), LOCK_EX, Deadline::Never()).ok());
  constexpr int kThreads = 4;
  std::vector<UniqueFd> fds;
  for (int i = 0; i < kThreads; ++i) fds.push_back(OpenAgain());

  // Different deadlines: a timer aimed at the wrong thread would cut a
  // longer wait short (EINTR before its deadline) or leave one hanging.
  struct Result {
    int err = -1;
    long long elapsed = 0;
  };
  std::vector<Result> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      const auto start = steady_clock::now();
      const Status status =
          Flock(fds[i].get(), LOCK_EX, Deadline::After(0.2 + 0.15 * i));
      results[i] = {status.err(), Since(start)};
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < kThreads; ++i) {
    SCOPED_TRACE("thread " + std::to_string(i));
    EXPECT_EQ(ErrName(ETIMEDOUT), ErrName(results[i].err));
    EXPECT_GE(results[i].elapsed, 200 + 150 * i);
    EXPECT_LT(results[i].elapsed, 5000);
  }
}

// Signal state of the calling thread for the timer signal.
struct SignalState {
  struct sigaction action;
  sigset_t mask;
};

SignalState CaptureSignalState() {
  SignalState state{};
  EXPECT_EQ(0, ::sigaction(TimerSignal(), nullptr, &state.action));
  EXPECT_EQ(0, ::pthread_sigmask(SIG_SETMASK, nullptr, &state.mask));
  return state;
}

void ExpectSameSignalState(const SignalState& before,
                           const SignalState& after) {
  EXPECT_EQ(reinterpret_cast<void*>(before.action.sa_handler),
            reinterpret_cast<void*>(after.action.sa_handler));
  EXPECT_EQ(before.action.sa_flags, after.action.sa_flags);
  for (int sig = 1; sig <= SIGRTMAX; ++sig) {
    EXPECT_EQ(sigismember(&before.action.sa_mask, sig),
              sigismember(&after.action.sa_mask, sig))
        << "sa_mask, signal " << sig;
    EXPECT_EQ(sigismember(&before.mask, sig), sigismember(&after.mask, sig))
        << "thread mask, signal " << sig;
  }
}

std::atomic<int> g_timer_signals_seen{0};
void CountTimerSignal(int) { ++g_timer_signals_seen; }
void CountTimerSignalInfo(int, siginfo_t*, void*) { ++g_timer_signals_seen; }

// Restores the timer signal's disposition and the thread's mask on scope exit.
class SignalStateRestorer final {
 public:
  SignalStateRestorer() {
    ::sigaction(TimerSignal(), nullptr, &action_);
    ::pthread_sigmask(SIG_SETMASK, nullptr, &mask_);
  }
  ~SignalStateRestorer() {
    ::sigaction(TimerSignal(), &action_, nullptr);
    ::pthread_sigmask(SIG_SETMASK, &mask_, nullptr);
  }

 private:
  struct sigaction action_;
  sigset_t mask_;
};

TEST_F(FlockTest, TimedWaitLeavesDispositionAndMaskAsTheyWere) {
  SignalStateRestorer restore;
  UniqueFd other = OpenAgain();
  ASSERT_TRUE(Flock(fd_.get(), LOCK_EX, Deadline::Never()).ok());

  struct sigaction plain {};
  plain.sa_handler = CountTimerSignal;
  sigemptyset(&plain.sa_mask);
  struct sigaction with_info {};
  with_info.sa_sigaction = CountTimerSignalInfo;
  with_info.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&with_info.sa_mask);
  sigaddset(&with_info.sa_mask, SIGUSR2);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  struct sigaction by_default {};
  by_default.sa_handler = SIG_DFL;
  sigemptyset(&by_default.sa_mask);

  const struct {
    const char* name;
    const struct sigaction* action;
  } dispositions[] = {{"default", &by_default},
                      {"ignored", &ignore},
                      {"handler", &plain},
                      {"siginfo", &with_info}};
  for (const auto& disposition : dispositions) {
    for (const bool block_another : {false, true}) {
      SCOPED_TRACE(std::string(disposition.name) +
                   (block_another ? ", SIGUSR2 blocked" : ", nothing blocked"));
      ASSERT_EQ(0, ::sigaction(TimerSignal(), disposition.action, nullptr));
      sigset_t mask;
      sigemptyset(&mask);
      if (block_another) sigaddset(&mask, SIGUSR2);
      ASSERT_EQ(0, ::pthread_sigmask(SIG_SETMASK, &mask, nullptr));
      g_timer_signals_seen = 0;

      const SignalState before = CaptureSignalState();
      EXPECT_ERR(ETIMEDOUT, Flock(other.get(), LOCK_EX, Deadline::After(0.05)));
      const SignalState after = CaptureSignalState();
      ExpectSameSignalState(before, after);
      // The timer's signals went to the engine's handler, not the caller's.
      EXPECT_EQ(0, g_timer_signals_seen.load());
    }
  }
}

TEST_F(FlockTest, BlockedPendingTimerSignalStaysPending) {
  SignalStateRestorer restore;
  UniqueFd other = OpenAgain();
  ASSERT_TRUE(Flock(fd_.get(), LOCK_EX, Deadline::Never()).ok());

  struct sigaction counting {};
  counting.sa_handler = CountTimerSignal;
  sigemptyset(&counting.sa_mask);
  ASSERT_EQ(0, ::sigaction(TimerSignal(), &counting, nullptr));
  sigset_t timer_signal;
  sigemptyset(&timer_signal);
  sigaddset(&timer_signal, TimerSignal());
  ASSERT_EQ(0, ::pthread_sigmask(SIG_BLOCK, &timer_signal, nullptr));
  g_timer_signals_seen = 0;
  ASSERT_EQ(0, ::pthread_kill(::pthread_self(), TimerSignal()));
  sigset_t pending;
  ASSERT_EQ(0, ::sigpending(&pending));
  ASSERT_EQ(1, sigismember(&pending, TimerSignal()));

  const SignalState before = CaptureSignalState();
  EXPECT_ERR(ETIMEDOUT, Flock(other.get(), LOCK_EX, Deadline::After(0.1)));
  const SignalState after = CaptureSignalState();
  ExpectSameSignalState(before, after);

  ASSERT_EQ(0, ::sigpending(&pending));
  EXPECT_EQ(1, sigismember(&pending, TimerSignal()))
      << "the caller's signal was lost";
  EXPECT_EQ(0, g_timer_signals_seen.load());
  // Exactly the one instance the caller raised is pending.
  const timespec no_wait{};
  EXPECT_EQ(TimerSignal(), ::sigtimedwait(&timer_signal, nullptr, &no_wait));
  EXPECT_EQ(-1, ::sigtimedwait(&timer_signal, nullptr, &no_wait));
  ASSERT_EQ(0, ::sigpending(&pending));
  EXPECT_EQ(0, sigismember(&pending, TimerSignal()));
}

TEST_F(FlockTest, AnotherSignalInterruptsTheWaitWithEintr) {
  struct sigaction old_usr1;
  struct sigaction usr1 {};
  usr1.sa_handler = CountUsr1;
  sigemptyset(&usr1.sa_mask);
  usr1.sa_flags = 0;  // no SA_RESTART: the wait sees EINTR
  ASSERT_EQ(0, ::sigaction(SIGUSR1, &usr1, &old_usr1));

  UniqueFd other = OpenAgain();
  ASSERT_TRUE(Flock(fd_.get(), LOCK_EX, Deadline::Never()).ok());
  g_usr1_seen = 0;
  const auto start = steady_clock::now();
  std::promise<int> outcome;
  std::future<int> result = outcome.get_future();
  std::thread waiter([&] {
    outcome.set_value(Flock(other.get(), LOCK_EX, Deadline::After(10)).err());
  });
  EXPECT_TRUE(WaitForFlockWaiter(ino_));
  // A signal can still land just before the blocking call: send until the
  // wait ends.
  while (result.wait_for(milliseconds(20)) != std::future_status::ready) {
    ::pthread_kill(waiter.native_handle(), SIGUSR1);
  }
  const int err = result.get();
  waiter.join();
  EXPECT_EQ(ErrName(EINTR), ErrName(err));
  EXPECT_LT(Since(start), 10000);
  EXPECT_GE(g_usr1_seen.load(), 1);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  // The interrupted waiter holds nothing.
  EXPECT_ERR(EWOULDBLOCK,
             Flock(other.get(), LOCK_SH | LOCK_NB, Deadline::Never()));
}

// The race in which the timer fires just before the blocking call starts:
// the attempt below spins past the deadline (the first expiry is handled
// then) and only then blocks; the timer's re-fire must still end the wait.
TEST(LockBeforeTest, ExpiryBeforeTheBlockingCallStillEndsTheWait) {
  int pipe_fds[2];
  ASSERT_EQ(0, ::pipe2(pipe_fds, O_CLOEXEC));
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);

  const auto start = steady_clock::now();
  const Deadline deadline = Deadline::After(0.05);
  int blocking_calls = 0;
  const Status status = LockBefore(deadline, [&](bool blocking) {
    if (!blocking) return Status::Error(EWOULDBLOCK);
    ++blocking_calls;
    while (Since(start) < 80) {
    }
    char byte;
    // Nothing is ever written: only a signal ends this read.
    return Status::Error(::read(read_end.get(), &byte, 1) < 0 ? errno : EIO);
  });
  EXPECT_ERR(ETIMEDOUT, status);
  EXPECT_EQ(1, blocking_calls);
  EXPECT_LT(Since(start), 2000);
}

// A timed wait that starts and ends while another on the same thread is
// blocked -- as a Perl handler run from the C signal handler does under
// PERL_SIGNALS=unsafe -- leaves the outer wait its own deadline.
TEST(LockBeforeTest, AWaitNestedInAnotherKeepsTheOuterDeadline) {
  int outer_fds[2], inner_fds[2];
  ASSERT_EQ(0, ::pipe2(outer_fds, O_CLOEXEC));
  ASSERT_EQ(0, ::pipe2(inner_fds, O_CLOEXEC));
  UniqueFd outer_read(outer_fds[0]), outer_write(outer_fds[1]);
  UniqueFd inner_read(inner_fds[0]), inner_write(inner_fds[1]);
  // Nothing is ever written to either pipe unless the outer wait hangs:
  // only a signal ends a read.
  auto read_until_signal = [](int fd) {
    char byte;
    return Status::Error(::read(fd, &byte, 1) < 0 ? errno : EIO);
  };
  Status inner = Status::Ok();
  std::promise<Status> outer;
  std::thread waiter([&] {
    outer.set_value(LockBefore(Deadline::After(0.3), [&](bool blocking) {
      if (!blocking) return Status::Error(EWOULDBLOCK);
      inner = LockBefore(Deadline::After(0.05), [&](bool inner_blocking) {
        return inner_blocking ? read_until_signal(inner_read.get())
                              : Status::Error(EWOULDBLOCK);
      });
      return read_until_signal(outer_read.get());
    }));
  });
  std::future<Status> outer_result = outer.get_future();
  if (outer_result.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    ADD_FAILURE() << "the outer wait lost its timer";
    ASSERT_EQ(1, ::write(outer_write.get(), "x", 1));
  }
  waiter.join();
  EXPECT_ERR(ETIMEDOUT, inner);
  EXPECT_ERR(ETIMEDOUT, outer_result.get());
}

TEST(LockBeforeTest, OutcomesOfTheAttempt) {
  int calls = 0;
  // Granted on the first, non-blocking try: no timer, one call.
  EXPECT_TRUE(LockBefore(Deadline::After(5), [&](bool blocking) {
                ++calls;
                EXPECT_FALSE(blocking);
                return Status::Ok();
              }).ok());
  EXPECT_EQ(1, calls);
  // A hard failure is returned as it is.
  EXPECT_ERR(ENOLCK,
             LockBefore(Deadline::After(5), [](bool) { return Status::Error(ENOLCK); }));
  // Never: exactly one blocking attempt.
  calls = 0;
  EXPECT_ERR(EIO, LockBefore(Deadline::Never(), [&](bool blocking) {
               ++calls;
               EXPECT_TRUE(blocking);
               return Status::Error(EIO);
             }));
  EXPECT_EQ(1, calls);
  // Immediate: one non-blocking attempt.
  calls = 0;
  EXPECT_ERR(EWOULDBLOCK, LockBefore(Deadline::Now(), [&](bool blocking) {
               ++calls;
               EXPECT_FALSE(blocking);
               return Status::Error(EWOULDBLOCK);
             }));
  EXPECT_EQ(1, calls);
  // Busy, then granted while blocking.
  calls = 0;
  EXPECT_TRUE(LockBefore(Deadline::After(5), [&](bool blocking) {
                ++calls;
                return Status::FromErrno(blocking ? 0 : EWOULDBLOCK);
              }).ok());
  EXPECT_EQ(2, calls);
}

// Lowers this process's soft RLIMIT_SIGPENDING to 0 (as `ulimit -Si 0`
// would) for the life of the object; the hard limit is left alone, so the
// old soft limit can be put back.
class NoQueuedSignals final {
 public:
  NoQueuedSignals() {
    ok_ = ::getrlimit(RLIMIT_SIGPENDING, &saved_) == 0;
    rlimit none = saved_;
    none.rlim_cur = 0;
    ok_ = ok_ && ::setrlimit(RLIMIT_SIGPENDING, &none) == 0;
  }
  ~NoQueuedSignals() {
    if (ok_) ::setrlimit(RLIMIT_SIGPENDING, &saved_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
};

TEST_F(FlockTest, TimerThatCannotBeArmedFailsWithEnolckNotEwouldblock) {
  UniqueFd other = OpenAgain();
  // In a new thread, which has no timer yet: one made by an earlier wait
  // would be re-armed without needing a queued-signal slot.
  std::thread([&] {
    struct sigaction before {};
    ASSERT_EQ(0, ::sigaction(TimerSignal(), nullptr, &before));
    NoQueuedSignals limit;
    ASSERT_TRUE(limit.ok());
    {
      // Check that the limit bites here: timer_create itself is refused.
      timer_t timer;
      sigevent event{};
      event.sigev_notify = SIGEV_SIGNAL;
      event.sigev_signo = TimerSignal();
      if (::timer_create(CLOCK_MONOTONIC, &event, &timer) == 0) {
        ::timer_delete(timer);
        GTEST_SKIP() << "RLIMIT_SIGPENDING does not limit POSIX timers here";
      }
      ASSERT_EQ(EAGAIN, errno);
    }
    // A free lock needs no timer.
    ASSERT_OK(Flock(fd_.get(), LOCK_EX, Deadline::After(5)));
    const int timers = CountTimers();
    // Busy with a positive deadline: the wait cannot be bounded, so it fails
    // at once with kCannotArmErrno -- never EWOULDBLOCK, which is EAGAIN.
    EXPECT_ERR(ENOLCK, Flock(other.get(), LOCK_EX, Deadline::After(5)));
    EXPECT_ERR(ENOLCK, Flock(other.get(), LOCK_SH, Deadline::After(0.001)));
    static_assert(kCannotArmErrno != EWOULDBLOCK && kCannotArmErrno != ETIMEDOUT, "");
    // What needs no timer is unchanged.
    EXPECT_ERR(EWOULDBLOCK, Flock(other.get(), LOCK_EX, Deadline::Now()));
    EXPECT_ERR(EWOULDBLOCK, Flock(other.get(), LOCK_EX | LOCK_NB, Deadline::After(5)));
    EXPECT_EQ(timers, CountTimers()) << "a failed arm left a timer behind";
    // The signal disposition and mask are as they were.
    struct sigaction action {};
    ASSERT_EQ(0, ::sigaction(TimerSignal(), nullptr, &action));
    EXPECT_EQ(before.sa_handler, action.sa_handler);
    ASSERT_OK(Flock(fd_.get(), LOCK_UN, Deadline::Never()));
    EXPECT_OK(Flock(other.get(), LOCK_EX, Deadline::After(5)));
  }).join();
}

}  // namespace
}  // namespace locker
