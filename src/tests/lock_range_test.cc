// Tests for range Locks, FindConflict and RangeEnd.
//
// The backend (OFD locks, or classic POSIX locks plus a process-wide table)
// is chosen once per process from FILE_LOCKER_NO_OFD, so these tests are
// written for both and the binary is run once in each mode. Where the two
// differ, UsingOfdLocks() says which expectation applies.
//
// FindConflict from another descriptor shows what this process's other
// handles see. What other processes see -- the kernel's locks -- is checked
// with KernelProbe, a child process that asks on its own descriptor. How
// locks on one open file description compose across dup()ed descriptors,
// fork and reused descriptor numbers is tested in registry_test.cc.
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <iostream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "deadline.h"
#include "process.h"
#include "range_table.h"
#include "status.h"
#include "test_util.h"
#include "unique_fd.h"

namespace locker {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

class RangeLockTest : public TempFileTest {
 protected:
  RangeLockTest() : TempFileTest("ranges") {}

  // Whether `mode` on [start, end) from fd would meet a lock; fills *out.
  bool Conflicts(int fd, int mode, Pos start, Pos end,
                 Conflict* out = nullptr) {
    Conflict conflict;
    const Status status = FindConflict(fd, mode, start, end, &conflict);
    EXPECT_OK(status);
    if (out) *out = conflict;
    return conflict.found;
  }
};

TEST(RangeLockModeTest, ModeFollowsTheEnvironment) {
  const char* no_ofd = ::getenv("FILE_LOCKER_NO_OFD");
  const bool forced = no_ofd && *no_ofd && *no_ofd != '0';
#ifdef F_OFD_SETLK
  EXPECT_EQ(!forced, UsingOfdLocks());
#else
  EXPECT_FALSE(UsingOfdLocks());
#endif
  std::cout << "[  INFO    ] range locks use "
            << (UsingOfdLocks() ? "OFD locks" : "classic POSIX locks") << "\n";
}

TEST(RangeEndTest, Validation) {
  constexpr off_t kMax = std::numeric_limits<off_t>::max();  // 2**63 - 1
  Pos end = 7;
  EXPECT_OK(RangeEnd(10, 5, &end));
  EXPECT_EQ(15u, end);
  EXPECT_OK(RangeEnd(0, 1, &end));
  EXPECT_EQ(1u, end);
  EXPECT_OK(RangeEnd(10, 0, &end));
  EXPECT_EQ(kRangeEnd, end);
  EXPECT_OK(RangeEnd(0, 0, &end));
  EXPECT_EQ(kRangeEnd, end);
  EXPECT_OK(RangeEnd(kMax, 0, &end));
  EXPECT_EQ(kRangeEnd, end);
  // Every byte of off_t can be covered: the last one is 2**63 - 1, so a
  // range may end at 2**63 (kRangeEnd), and one ending just before it is
  // not mistaken for "to end of file".
  EXPECT_OK(RangeEnd(kMax - 10, 5, &end));
  EXPECT_EQ(kRangeEnd - 6, end);
  EXPECT_OK(RangeEnd(kMax - 10, 10, &end));
  EXPECT_EQ(static_cast<Pos>(kMax), end);
  EXPECT_NE(kRangeEnd, end);
  EXPECT_OK(RangeEnd(kMax - 10, 11, &end));  // the largest that fits
  EXPECT_EQ(kRangeEnd, end);
  EXPECT_OK(RangeEnd(kMax, 1, &end));
  EXPECT_EQ(kRangeEnd, end);
  EXPECT_OK(RangeEnd(0, kMax, &end));
  EXPECT_EQ(static_cast<Pos>(kMax), end);
  EXPECT_OK(RangeEnd(1, kMax, &end));
  EXPECT_EQ(kRangeEnd, end);

  end = 7;
  EXPECT_ERR(EINVAL, RangeEnd(-1, 5, &end));
  EXPECT_ERR(EINVAL, RangeEnd(5, -1, &end));
  EXPECT_ERR(EINVAL, RangeEnd(-1, 0, &end));
  EXPECT_ERR(EINVAL, RangeEnd(std::numeric_limits<off_t>::min(), 1, &end));
  EXPECT_ERR(EINVAL, RangeEnd(0, std::numeric_limits<off_t>::min(), &end));
  EXPECT_ERR(EOVERFLOW, RangeEnd(kMax - 10, 12, &end));
  EXPECT_ERR(EOVERFLOW, RangeEnd(kMax, 2, &end));
  EXPECT_ERR(EOVERFLOW, RangeEnd(2, kMax, &end));
  EXPECT_ERR(EOVERFLOW, RangeEnd(kMax, kMax, &end));
  EXPECT_ERR(EOVERFLOW, RangeEnd(kMax / 2 + 1, kMax / 2 + 2, &end));
  EXPECT_EQ(7u, end) << "*end written on failure";
}

// The engine's contract for EINTR: run handlers, then call again with the
// same deadline (classic in-process waits also come back with EINTR every
// slice so that handlers can run). This is what the Perl glue does.
template <typename Call>
Status UntilNotInterrupted(Call&& call) {
  Status status = call();
  while (status.err() == EINTR) status = call();
  return status;
}

TEST_F(RangeLockTest, AcquireAndRelease) {
  UniqueFd other = OpenAgain();
  Lock lock;
  EXPECT_TRUE(lock.released());
  ASSERT_OK(
      lock.AcquireDescriptor(fd_.get(), LOCK_EX, 10, 20, Deadline::Never()));
  EXPECT_TRUE(lock.held());
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_EX, lock.mode());
  EXPECT_EQ(10u, lock.start());
  EXPECT_EQ(20u, lock.end());
  EXPECT_FALSE(lock.whole());
  EXPECT_TRUE(lock.writable());
  EXPECT_TRUE(lock.path().empty());
  // The lock keeps a close-on-exec duplicate of its own.
  ASSERT_NE(-1, lock.fd());
  EXPECT_NE(fd_.get(), lock.fd());
  EXPECT_EQ(FD_CLOEXEC, ::fcntl(lock.fd(), F_GETFD) & FD_CLOEXEC);
  EXPECT_TRUE(lock.InOwnerProcess());

  Conflict conflict;
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, 10));
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 20, kRangeEnd));
  ASSERT_TRUE(Conflicts(other.get(), LOCK_SH, 15, 16, &conflict));
  EXPECT_EQ(LOCK_EX, conflict.mode);
  EXPECT_LE(conflict.start, 15u);
  EXPECT_GT(conflict.length == 0 ? kRangeEnd : conflict.start + conflict.length,
            15u);
  EXPECT_EQ(UsingOfdLocks() ? -1 : ::getpid(), conflict.pid);
  // A handle never conflicts with itself.
  EXPECT_FALSE(Conflicts(fd_.get(), LOCK_EX, 0, kRangeEnd));

  lock.Release();
  EXPECT_TRUE(lock.released());
  EXPECT_EQ(-1, lock.fd());
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, kRangeEnd));
  lock.Release();  // a second call does nothing
  EXPECT_TRUE(lock.released());
}

TEST_F(RangeLockTest, LocksOnOneDescriptorCompose) {
  UniqueFd other = OpenAgain();
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  Lock exclusive, shared;
  ASSERT_OK(exclusive.AcquireDescriptor(fd_.get(), LOCK_EX, 0, 100,
                                        Deadline::Never()));
  ASSERT_OK(
      shared.AcquireDescriptor(fd_.get(), LOCK_SH, 50, 150, Deadline::Never()));
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 100));
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 100, 50));

  exclusive.Release();
  Conflict conflict;
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, 50, &conflict));
  ASSERT_TRUE(Conflicts(other.get(), LOCK_EX, 50, 100, &conflict))
      << "releasing one lock undid another on the same descriptor";
  EXPECT_EQ(LOCK_SH, conflict.mode);
  EXPECT_EQ(50u, conflict.start);
  ASSERT_TRUE(Conflicts(other.get(), LOCK_EX, 100, 150, &conflict));
  EXPECT_EQ(LOCK_SH, conflict.mode);
  EXPECT_FALSE(Conflicts(other.get(), LOCK_SH, 0, kRangeEnd));
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 150, kRangeEnd));

  // What another process sees: [50, 150) shared, nothing else.
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 50));
  const struct flock met = probe.Ask(F_WRLCK, 50, 50);
  EXPECT_EQ(F_RDLCK, met.l_type);
  EXPECT_EQ(50, met.l_start);
  EXPECT_EQ(100, met.l_len);
  EXPECT_EQ(UsingOfdLocks() ? -1 : ::getpid(), met.l_pid);
  EXPECT_EQ(F_UNLCK, probe.Meets(F_RDLCK, 0, 0));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 150, 0));

  shared.Release();
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, kRangeEnd));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

TEST_F(RangeLockTest, ReleasingSharedKeepsOverlappingShared) {
  UniqueFd other = OpenAgain();
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  Lock a, b, c;
  ASSERT_OK(a.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 100, Deadline::Never()));
  ASSERT_OK(b.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 100, Deadline::Never()));
  ASSERT_OK(c.AcquireDescriptor(fd_.get(), LOCK_EX, 40, kRangeEnd,
                                Deadline::Never()));
  a.Release();
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 0, 40));
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 40, 0));
  c.Release();
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 0, 100));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 100, 0));
  EXPECT_TRUE(Conflicts(other.get(), LOCK_EX, 99, 100));
  b.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

TEST_F(RangeLockTest, TwoDescriptorsInOneProcessConflict) {
  UniqueFd other = OpenAgain();
  Lock held, shared, contender;
  ASSERT_OK(
      held.AcquireDescriptor(fd_.get(), LOCK_EX, 0, 10, Deadline::Never()));
  EXPECT_ERR(EWOULDBLOCK,
             contender.AcquireDescriptor(other.get(), LOCK_EX | LOCK_NB, 5, 15,
                                         Deadline::Never()));
  EXPECT_TRUE(contender.released());
  EXPECT_ERR(EWOULDBLOCK,
             contender.AcquireDescriptor(other.get(), LOCK_SH | LOCK_NB, 9, 10,
                                         Deadline::Never()));
  // LOCK_NB means one try whatever the deadline; an immediate deadline too.
  EXPECT_ERR(EWOULDBLOCK,
             contender.AcquireDescriptor(other.get(), LOCK_EX | LOCK_NB, 0, 10,
                                         Deadline::After(5)));
  EXPECT_ERR(EWOULDBLOCK,
             contender.AcquireDescriptor(other.get(), LOCK_EX, 0, kRangeEnd,
                                         Deadline::Now()));
  // Bytes next to the held ones are free.
  EXPECT_OK(contender.AcquireDescriptor(other.get(), LOCK_EX | LOCK_NB, 10, 20,
                                        Deadline::Never()));
  contender.Release();

  // Shared locks from two handles coexist; either blocks the other's EX.
  held.Release();
  ASSERT_OK(
      held.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 10, Deadline::Never()));
  EXPECT_OK(shared.AcquireDescriptor(other.get(), LOCK_SH | LOCK_NB, 0, 10,
                                     Deadline::Never()));
  Lock upgrade_probe;
  EXPECT_ERR(EWOULDBLOCK,
             upgrade_probe.AcquireDescriptor(other.get(), LOCK_EX | LOCK_NB, 0,
                                             1, Deadline::Never()));
  EXPECT_ERR(EWOULDBLOCK,
             upgrade_probe.AcquireDescriptor(fd_.get(), LOCK_EX | LOCK_NB, 0, 1,
                                             Deadline::Never()));
}

TEST_F(RangeLockTest, TimedWaitEndsWithEtimedout) {
  UniqueFd other = OpenAgain();
  Lock held, waiter;
  ASSERT_OK(
      held.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 10, Deadline::Never()));
  const auto start = steady_clock::now();
  const Deadline deadline = Deadline::After(0.2);
  const Status status = UntilNotInterrupted([&] {
    return waiter.AcquireDescriptor(other.get(), LOCK_EX, 5, 6, deadline);
  });
  const long long elapsed = Since(start);
  EXPECT_ERR(ETIMEDOUT, status);
  EXPECT_GE(elapsed, 200);
  EXPECT_LT(elapsed, 5000);
  EXPECT_TRUE(waiter.released());
  held.Release();
  EXPECT_FALSE(Conflicts(fd_.get(), LOCK_EX, 0, kRangeEnd))
      << "the timed-out waiter holds bytes";
}

TEST_F(RangeLockTest, WaiterGetsTheLockWhenTheHolderReleases) {
  UniqueFd other = OpenAgain();
  Lock held, waiter;
  ASSERT_OK(
      held.AcquireDescriptor(fd_.get(), LOCK_EX, 0, 10, Deadline::Never()));
  std::promise<void> about_to_wait;
  std::promise<Status> outcome;
  std::thread thread([&] {
    about_to_wait.set_value();
    outcome.set_value(waiter.AcquireDescriptor(other.get(), LOCK_EX, 0, 10,
                                               Deadline::After(10)));
  });
  about_to_wait.get_future().wait();
  held.Release();
  thread.join();
  ASSERT_OK(outcome.get_future().get());
  EXPECT_TRUE(waiter.held());
  EXPECT_TRUE(Conflicts(fd_.get(), LOCK_SH, 0, 10));
}

TEST_F(RangeLockTest, AnotherSignalInterruptsTheWaitWithEintr) {
  struct sigaction usr1 {};
  usr1.sa_handler = CountUsr1;
  sigemptyset(&usr1.sa_mask);
  usr1.sa_flags = 0;  // no SA_RESTART: the wait sees EINTR
  struct sigaction old_usr1;
  ASSERT_EQ(0, ::sigaction(SIGUSR1, &usr1, &old_usr1));

  UniqueFd other = OpenAgain();
  Lock held, waiter;
  ASSERT_OK(
      held.AcquireDescriptor(fd_.get(), LOCK_EX, 0, 10, Deadline::Never()));
  g_usr1_seen = 0;
  const auto start = steady_clock::now();
  std::promise<Status> outcome;
  std::future<Status> result = outcome.get_future();
  std::thread thread([&] {
    outcome.set_value(waiter.AcquireDescriptor(other.get(), LOCK_EX, 0, 10,
                                               Deadline::After(5)));
  });
  // A signal can land before the wait starts: send until the wait ends.
  while (result.wait_for(milliseconds(20)) != std::future_status::ready) {
    ::pthread_kill(thread.native_handle(), SIGUSR1);
  }
  thread.join();
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  const Status status = result.get();
  const long long elapsed = Since(start);

  EXPECT_GE(g_usr1_seen.load(), 1);
  EXPECT_ERR(EINTR, status);
  EXPECT_LT(elapsed, 4000) << "the wait went on to its deadline";
  EXPECT_TRUE(waiter.released());
}

TEST_F(RangeLockTest, ExclusiveNeedsAWritableDescriptor) {
  UniqueFd read_only = OpenAgain(O_RDONLY);
  UniqueFd other = OpenAgain();
  Lock lock;
  EXPECT_ERR(EBADF, lock.AcquireDescriptor(read_only.get(), LOCK_EX, 0, 10,
                                           Deadline::Never()));
  EXPECT_ERR(EBADF, lock.AcquireDescriptor(read_only.get(), LOCK_EX | LOCK_NB,
                                           0, 10, Deadline::Now()));
  EXPECT_TRUE(lock.released());
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, kRangeEnd))
      << "a failed lock left a record";

  // Shared is fine; the upgrade fails the same way and keeps the shared lock.
  ASSERT_OK(lock.AcquireDescriptor(read_only.get(), LOCK_SH, 0, 10,
                                   Deadline::Never()));
  EXPECT_ERR(EBADF, lock.Upgrade(Deadline::Never()));
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());
  Conflict conflict;
  ASSERT_TRUE(Conflicts(other.get(), LOCK_EX, 0, 10, &conflict));
  EXPECT_EQ(LOCK_SH, conflict.mode);
}

TEST_F(RangeLockTest, BadDescriptor) {
  Lock lock;
  EXPECT_ERR(EBADF,
             lock.AcquireDescriptor(-1, LOCK_SH, 0, 10, Deadline::Never()));
  EXPECT_TRUE(lock.released());
  Conflict conflict;
  EXPECT_ERR(EBADF, FindConflict(-1, LOCK_SH, 0, 10, &conflict));
  EXPECT_FALSE(conflict.found);
}

TEST_F(RangeLockTest, UpgradeAndDowngrade) {
  UniqueFd other = OpenAgain();
  UniqueFd third = OpenAgain();
  Lock lock;
  EXPECT_ERR(ENOLCK, lock.Upgrade(Deadline::Now()));
  EXPECT_ERR(ENOLCK, lock.Downgrade());

  ASSERT_OK(
      lock.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 100, Deadline::Never()));
  EXPECT_OK(lock.Upgrade(Deadline::Now()));
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_EX, lock.mode());
  Conflict conflict;
  ASSERT_TRUE(Conflicts(other.get(), LOCK_SH, 0, 100, &conflict));
  EXPECT_EQ(LOCK_EX, conflict.mode);
  EXPECT_OK(lock.Upgrade(Deadline::Now()));  // already exclusive

  EXPECT_OK(lock.Downgrade());
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());
  EXPECT_FALSE(Conflicts(other.get(), LOCK_SH, 0, 100));
  ASSERT_TRUE(Conflicts(other.get(), LOCK_EX, 0, 100, &conflict));
  EXPECT_EQ(LOCK_SH, conflict.mode);
  EXPECT_OK(lock.Downgrade());  // already shared

  // Busy: another handle shares part of the range.
  Lock other_shared;
  ASSERT_OK(other_shared.AcquireDescriptor(other.get(), LOCK_SH, 50, 60,
                                           Deadline::Never()));
  EXPECT_ERR(EWOULDBLOCK, lock.Upgrade(Deadline::Now()));
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());
  ASSERT_TRUE(Conflicts(third.get(), LOCK_EX, 0, 10, &conflict));
  EXPECT_EQ(LOCK_SH, conflict.mode);

  const auto start = steady_clock::now();
  const Deadline deadline = Deadline::After(0.2);
  EXPECT_ERR(ETIMEDOUT, UntilNotInterrupted([&] { return lock.Upgrade(deadline); }));
  EXPECT_GE(Since(start), 200);
  // The shared lock was taken back.
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());
  ASSERT_TRUE(Conflicts(third.get(), LOCK_EX, 0, 10, &conflict));
  EXPECT_EQ(LOCK_SH, conflict.mode);
  EXPECT_FALSE(Conflicts(third.get(), LOCK_SH, 0, 100));

  other_shared.Release();
  EXPECT_OK(lock.Upgrade(Deadline::After(1)));
  EXPECT_EQ(LOCK_EX, lock.mode());
  ASSERT_TRUE(Conflicts(third.get(), LOCK_SH, 99, 100, &conflict));
  EXPECT_EQ(LOCK_EX, conflict.mode);

  lock.Release();
  EXPECT_ERR(ENOLCK, lock.Upgrade(Deadline::Now()));
  EXPECT_ERR(ENOLCK, lock.Downgrade());
  EXPECT_FALSE(Conflicts(third.get(), LOCK_EX, 0, kRangeEnd));
}

TEST_F(RangeLockTest, UpgradeAndDowngradeComposeOnOneDescriptor) {
  UniqueFd other = OpenAgain();
  Lock a, b;
  ASSERT_OK(a.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 100, Deadline::Never()));
  ASSERT_OK(
      b.AcquireDescriptor(fd_.get(), LOCK_SH, 50, 150, Deadline::Never()));
  // Locks on the same handle never stand in each other's way.
  ASSERT_OK(a.Upgrade(Deadline::Now()));
  Conflict conflict;
  ASSERT_TRUE(Conflicts(other.get(), LOCK_SH, 0, 1, &conflict));
  EXPECT_EQ(LOCK_EX, conflict.mode);
  ASSERT_TRUE(Conflicts(other.get(), LOCK_SH, 99, 100, &conflict));
  EXPECT_EQ(LOCK_EX, conflict.mode);
  EXPECT_FALSE(Conflicts(other.get(), LOCK_SH, 100, 150));

  // Downgrading a leaves b's bytes shared, and a's own shared.
  ASSERT_OK(a.Downgrade());
  EXPECT_FALSE(Conflicts(other.get(), LOCK_SH, 0, 150));
  ASSERT_TRUE(Conflicts(other.get(), LOCK_EX, 0, 1, &conflict));
  EXPECT_EQ(LOCK_SH, conflict.mode);

  ASSERT_OK(b.Upgrade(Deadline::Now()));
  a.Release();
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, 50));
  ASSERT_TRUE(Conflicts(other.get(), LOCK_SH, 50, 51, &conflict));
  EXPECT_EQ(LOCK_EX, conflict.mode);
  ASSERT_TRUE(Conflicts(other.get(), LOCK_SH, 149, 150, &conflict));
  EXPECT_EQ(LOCK_EX, conflict.mode);
  b.Release();
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, kRangeEnd));
}

TEST_F(RangeLockTest, TwoHoldersUpgradingAtOnceBothFinish) {
  UniqueFd other = OpenAgain();
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Lock a, b;
    ASSERT_OK(
        a.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 100, Deadline::Never()));
    ASSERT_OK(
        b.AcquireDescriptor(other.get(), LOCK_SH, 0, 100, Deadline::Never()));
    std::promise<void> go;
    std::shared_future<void> start = go.get_future().share();
    auto upgrade_then_release = [&start](Lock* lock) {
      start.wait();
      const Deadline deadline = Deadline::After(10);
      const Status status =
          UntilNotInterrupted([&] { return lock->Upgrade(deadline); });
      lock->Release();
      return status.err();
    };
    auto first = std::async(std::launch::async, upgrade_then_release, &a);
    auto second = std::async(std::launch::async, upgrade_then_release, &b);
    go.set_value();
    ASSERT_EQ(std::future_status::ready,
              first.wait_for(std::chrono::seconds(30)));
    ASSERT_EQ(std::future_status::ready,
              second.wait_for(std::chrono::seconds(30)));
    EXPECT_EQ("OK", ErrName(first.get()));
    EXPECT_EQ("OK", ErrName(second.get()));
  }
  EXPECT_FALSE(Conflicts(fd_.get(), LOCK_EX, 0, kRangeEnd));
}

TEST_F(RangeLockTest, ExclusiveLocksExcludeAcrossThreads) {
  // Each thread has its own handle: the locks must exclude each other, in
  // the kernel (OFD) or in the process's table (classic).
  constexpr int kThreads = 4;
  constexpr int kRounds = 300;
  std::vector<UniqueFd> fds;
  for (int i = 0; i < kThreads; ++i) fds.push_back(OpenAgain());
  std::atomic<int> inside{0};
  std::atomic<int> overlaps{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < kRounds; ++round) {
        Lock lock;
        const Deadline deadline = Deadline::After(30);
        const Status status = UntilNotInterrupted([&] {
          return lock.AcquireDescriptor(fds[i].get(), LOCK_EX, 0, 10, deadline);
        });
        if (!status.ok()) {
          ++failures;
          continue;
        }
        if (inside.fetch_add(1) != 0) ++overlaps;
        std::this_thread::yield();
        inside.fetch_sub(1);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(0, failures.load());
  EXPECT_EQ(0, overlaps.load())
      << "two handles held the same bytes exclusively at once";
}

TEST_F(RangeLockTest, LocksOnOneDescriptorFromTwoThreads) {
  // Two threads lock and release the same bytes through the same handle;
  // while a thread holds its lock the kernel must show it to others.
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  constexpr int kRounds = 500;
  std::atomic<int> missing{0};
  std::atomic<int> failures{0};
  auto worker = [&] {
    for (int round = 0; round < kRounds; ++round) {
      Lock lock;
      if (!lock.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 10,
                                  Deadline::After(10))
               .ok()) {
        ++failures;
        continue;
      }
      if (probe.Meets(F_WRLCK, 0, 10) != F_RDLCK) ++missing;
    }
  };
  std::thread first(worker), second(worker);
  first.join();
  second.join();
  EXPECT_EQ(0, failures.load());
  EXPECT_EQ(0, missing.load()) << "a held lock was missing from the kernel";
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

// ---- Locks through a path ---------------------------------------------------

TEST_F(RangeLockTest, AcquirePathAndUnlink) {
  const std::string path = dir_.path() + "/by-path";
  PathOptions options;
  options.unlink = true;
  Lock lock;
  ASSERT_OK(lock.AcquirePath(path, LOCK_EX, 0, 10, options, Deadline::Never()));
  EXPECT_TRUE(lock.held());
  EXPECT_TRUE(lock.writable());
  EXPECT_EQ(path, lock.path());
  UniqueFd other(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(other.valid());
  EXPECT_TRUE(Conflicts(other.get(), LOCK_SH, 0, 10));
  lock.Release();
  EXPECT_FALSE(Exists(path));
  other.reset();

  // Not removed while another handle still holds a range of it.
  Lock first, second;
  ASSERT_OK(
      first.AcquirePath(path, LOCK_SH, 0, 10, options, Deadline::Never()));
  ASSERT_OK(
      second.AcquirePath(path, LOCK_SH, 100, 110, options, Deadline::Never()));
  first.Release();
  EXPECT_TRUE(Exists(path)) << "removed while another lock was held";
  second.Release();
  EXPECT_FALSE(Exists(path));
}

TEST_F(RangeLockTest, AcquirePathSymlinkAndBusy) {
  const std::string link = dir_.path() + "/link";
  ASSERT_EQ(0, ::symlink(path_.c_str(), link.c_str()));
  const int fds = CountOpenFds();
  Lock lock;
  EXPECT_ERR(ELOOP, lock.AcquirePath(link, LOCK_SH, 0, 10, PathOptions(),
                                     Deadline::Never()));
  {
    KernelProbe probe(path_);
    ASSERT_TRUE(probe.ok());
    Lock held;
    ASSERT_OK(
        held.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 10, Deadline::Never()));
    EXPECT_ERR(EWOULDBLOCK, lock.AcquirePath(path_, LOCK_EX | LOCK_NB, 0, 10,
                                             PathOptions(), Deadline::Never()));
    EXPECT_ERR(ETIMEDOUT, lock.AcquirePath(path_, LOCK_EX, 5, 6, PathOptions(),
                                           Deadline::After(0.05)));
    EXPECT_TRUE(lock.released());
    // Giving up those descriptors did not drop the lock held on the file (a
    // classic lock would go with any close; the engine keeps them open).
    EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 0, 10));
  }
  EXPECT_EQ(fds, CountOpenFds())
      << "a failed acquire left a descriptor open for good";
  PathOptions follow;
  follow.follow_symlinks = true;
  EXPECT_OK(lock.AcquirePath(link, LOCK_SH, 0, 10, follow, Deadline::Never()));
}

TEST_F(RangeLockTest, FindConflictAtPathKeepsTheLocks) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  const int fds = CountOpenFds();
  {
    Lock held;
    ASSERT_OK(
        held.AcquireDescriptor(fd_.get(), LOCK_EX, 0, 10, Deadline::Never()));
    EXPECT_EQ(!UsingOfdLocks(), ClassicLocksHeld(held.inode()));
    Conflict conflict;
    ASSERT_OK(FindConflictAt(path_, LOCK_SH, 5, 6, &conflict));
    EXPECT_TRUE(conflict.found);
    EXPECT_EQ(LOCK_EX, conflict.mode);
    ASSERT_OK(FindConflictAt(path_, LOCK_SH, 10, kRangeEnd, &conflict));
    EXPECT_FALSE(conflict.found);
    // Asking opened and gave up a descriptor of the file: the lock stays.
    EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10));
    EXPECT_ERR(ENOENT, FindConflictAt(dir_.path() + "/missing", LOCK_SH, 0, 1,
                                      &conflict));
  }
  struct stat st;
  ASSERT_EQ(0, ::fstat(fd_.get(), &st));
  EXPECT_FALSE(ClassicLocksHeld(InodeKey{st.st_dev, st.st_ino}));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
  EXPECT_EQ(fds, CountOpenFds());
}

TEST_F(RangeLockTest, ReleasingAnotherHandleKeepsTheLock) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  const int fds = CountOpenFds();
  Lock a, b;
  ASSERT_OK(
      a.AcquirePath(path_, LOCK_EX, 0, 10, PathOptions(), Deadline::Never()));
  ASSERT_OK(b.AcquirePath(path_, LOCK_SH, 100, 110, PathOptions(),
                          Deadline::Never()));
  EXPECT_NE(a.fd(), b.fd());
  b.Release();  // closes (or, for classic locks, sets aside) b's descriptor
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10))
      << "closing b's handle dropped a's lock";
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 100, 10));
  a.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
  EXPECT_EQ(fds, CountOpenFds()) << "a descriptor set aside was never closed";
}

TEST_F(RangeLockTest, SetAsideDescriptorIsClosedWithTheLastLock) {
  // A path lock released while a lock on the caller's descriptor is still
  // held; the descriptor it sets aside must go when that last lock goes.
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  const int fds = CountOpenFds();
  {
    Lock borrowed, owned;
    ASSERT_OK(borrowed.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 10,
                                         Deadline::Never()));
    ASSERT_OK(owned.AcquirePath(path_, LOCK_SH, 20, 30, PathOptions(),
                                Deadline::Never()));
    owned.Release();
    EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 0, 10));
    borrowed.Release();
    EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
  }
  EXPECT_EQ(fds, CountOpenFds()) << "a descriptor set aside was never closed";
}

TEST_F(RangeLockTest, CloseThenReuseTheDescriptorNumber) {
  UniqueFd other = OpenAgain();
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  UniqueFd doomed = OpenAgain();
  const int number = doomed.get();
  Lock lock;
  ASSERT_OK(lock.AcquireDescriptor(number, LOCK_EX, 0, 100, Deadline::Never()));
  doomed.reset();  // the caller closes its descriptor under the live lock
  if (UsingOfdLocks()) {
    // The lock belongs to the open file description, which the lock's own
    // duplicate keeps. (Classic locks go with any close of the file: that
    // is POSIX, and the caller's doing.)
    EXPECT_TRUE(lock.held());
    EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 100))
        << "closing the caller's descriptor dropped the lock";
  }

  UniqueFd reused = OpenAgain();
  ASSERT_EQ(number, reused.get())
      << "the number was not reused; nothing to test";
  // A new open file description behind the old number: nothing the old
  // lock holds counts for it, and its locks conflict with the old one.
  Lock fresh;
  EXPECT_ERR(EWOULDBLOCK, fresh.AcquireDescriptor(reused.get(), LOCK_SH, 0, 10,
                                                  Deadline::Now()));
  EXPECT_ERR(EWOULDBLOCK, fresh.AcquireDescriptor(reused.get(), LOCK_EX, 99,
                                                  100, Deadline::Now()));
  EXPECT_TRUE(fresh.released());
  ASSERT_OK(fresh.AcquireDescriptor(reused.get(), LOCK_EX, 100, 110,
                                    Deadline::Now()));
  EXPECT_NE(lock.fd(), fresh.fd());
  fresh.Release();
  if (UsingOfdLocks()) {
    EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 100));
    EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 100, 0));
  }
  lock.Release();
  EXPECT_FALSE(Conflicts(other.get(), LOCK_EX, 0, kRangeEnd));
  ASSERT_OK(fresh.AcquireDescriptor(reused.get(), LOCK_EX, 0, 100,
                                    Deadline::Now()));
  fresh.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

TEST_F(RangeLockTest, ForkedChildReleaseLeavesTheParentsLock) {
  PathOptions options;
  options.unlink = true;
  Lock lock;
  ASSERT_OK(
      lock.AcquirePath(path_, LOCK_EX, 0, 10, options, Deadline::Never()));
  const pid_t child = ForkChildThatReleases(lock);
  ASSERT_NE(-1, child) << strerror(errno);
  int wstatus = 0;
  ASSERT_EQ(child, ::waitpid(child, &wstatus, 0));
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(0, WEXITSTATUS(wstatus))
      << "1: stale pid, 2: child is owner, 4: not released";

  EXPECT_TRUE(lock.held());
  EXPECT_TRUE(Exists(path_)) << "the child removed the file";
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10))
      << "the child's release unlocked the parent";
  lock.Release();
  EXPECT_FALSE(Exists(path_));
}

// A kernel that refuses to lower is reported, not ignored: here the
// registry's descriptor is closed behind its back, so every lowering fails.
TEST_F(RangeLockTest, RefusedLoweringIsReported) {
  Lock exclusive, shared;
  ASSERT_OK(exclusive.AcquireDescriptor(fd_.get(), LOCK_EX, 0, 10, Deadline::Never()));
  ASSERT_OK(shared.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 10, Deadline::Never()));
  ASSERT_EQ(exclusive.fd(), shared.fd()) << "one OFD, one Description";
  const int registry_fd = exclusive.fd();
  // An O_PATH descriptor takes the number: nothing can be locked through it.
  ASSERT_EQ(0, ::close(registry_fd));
  ASSERT_EQ(registry_fd, ::open("/", O_PATH | O_CLOEXEC));
  EXPECT_ERR(EBADF, exclusive.Downgrade());
  EXPECT_EQ(LOCK_SH, exclusive.mode()) << "the hold is shared whatever the kernel said";
  EXPECT_OK(exclusive.Release()) << "the other shared hold wants the bytes as they are";
  EXPECT_ERR(EBADF, shared.Release());
}

}  // namespace
}  // namespace locker
