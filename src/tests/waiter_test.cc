// Tests for Waiter: asynchronous acquisition on a thread of the engine's,
// ended by the grant, a deadline, Cancel() or the destructor, with the
// outcome told through a readable descriptor. The lock is always checked
// through another open file description (the kernel), never through the
// Waiter's or the Lock's own record. LOCKER_TEST_SEED repeats the race test.
#include "waiter.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "deadline.h"
#include "lock.h"
#include "status.h"
#include "test_util.h"
#include "unique_fd.h"
#include "wait_timer.h"

namespace locker {
namespace {

int CountTasks() {
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n;
}

// Whether fd is readable within timeout_ms.
bool Readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

class WaiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    path_ = dir_.path() + "/lock";
    UniqueFd fd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd.valid());
    struct stat st;
    ASSERT_EQ(0, ::fstat(fd.get(), &st));
    ino_ = st.st_ino;
  }

  // A new open file description of the file.
  UniqueFd Open() const { return UniqueFd(::open(path_.c_str(), O_RDWR | O_CLOEXEC)); }

  // Whether another open file description could take mode right now.
  bool FreeFor(int mode) const {
    UniqueFd fd = Open();
    if (::flock(fd.get(), mode | LOCK_NB) != 0) return false;
    ::flock(fd.get(), LOCK_UN);
    return true;
  }

  // Whether another OFD could take bytes [start, start + len) exclusively.
  bool RangeFree(off_t start, off_t len) const {
    UniqueFd fd = Open();
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    if (!UsingOfdLocks()) {
      // Classic locks of this process do not conflict with each other in
      // the kernel: ask from a child process.
      const pid_t child = ::fork();
      if (child == 0) ::_exit(::fcntl(fd.get(), F_SETLK, &fl) == 0 ? 0 : 1);
      int status = 0;
      ::waitpid(child, &status, 0);
      return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    return ::fcntl(fd.get(), F_OFD_GETLK, &fl) == 0 && fl.l_type == F_UNLCK;
  }

  WaitRequest PathRequest(int mode) const {
    WaitRequest r;
    r.path = path_;
    r.mode = mode;
    return r;
  }

  TempDir dir_;
  std::string path_;
  ino_t ino_ = 0;
};

TEST_F(WaiterTest, FreeLockIsSettledWithoutAThread) {
  const int tasks = CountTasks();
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(PathRequest(LOCK_EX), &w));
  EXPECT_FALSE(w->threaded());
  EXPECT_EQ(tasks, CountTasks());
  EXPECT_TRUE(w->Ended());
  EXPECT_TRUE(Readable(w->fd(), 0));
  Lock lock;
  ASSERT_OK(w->Finish(&lock));
  EXPECT_TRUE(lock.held());
  EXPECT_FALSE(FreeFor(LOCK_SH));
  EXPECT_ERR(EALREADY, w->Finish(&lock));
  EXPECT_TRUE(lock.held());  // a second Finish leaves the first guard alone
  w.reset();
  EXPECT_FALSE(FreeFor(LOCK_SH));
  lock.Release();
  EXPECT_TRUE(FreeFor(LOCK_EX));
}

TEST_F(WaiterTest, BusyLockIsGrantedWhenTheHolderLetsGo) {
  const int fds = CountOpenFds();
  UniqueFd holder = Open();
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(PathRequest(LOCK_EX), &w));
  EXPECT_TRUE(w->threaded());
  ASSERT_TRUE(WaitForFlockWaiter(ino_));
  EXPECT_FALSE(w->Ended());
  EXPECT_FALSE(Readable(w->fd(), 0));
  Lock lock;
  EXPECT_ERR(EINPROGRESS, w->Finish(&lock));
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_UN));
  ASSERT_TRUE(Readable(w->fd(), 10000));
  EXPECT_TRUE(w->Ended());
  ASSERT_OK(w->Finish(&lock));
  EXPECT_FALSE(FreeFor(LOCK_SH));
  w.reset();
  lock.Release();
  holder.reset();
  EXPECT_TRUE(FreeFor(LOCK_EX));
  EXPECT_EQ(fds, CountOpenFds());
}

TEST_F(WaiterTest, DeadlineEndsTheWaitWithEtimedout) {
  UniqueFd holder = Open();
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  WaitRequest r = PathRequest(LOCK_EX);
  r.deadline = Deadline::After(0.05);
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(r, &w));
  ASSERT_TRUE(Readable(w->fd(), 10000));
  Lock lock;
  EXPECT_ERR(ETIMEDOUT, w->Finish(&lock));
  EXPECT_ERR(ETIMEDOUT, w->Finish(&lock));
  EXPECT_FALSE(lock.held());
  holder.reset();
  EXPECT_TRUE(FreeFor(LOCK_EX));
}

TEST_F(WaiterTest, NonBlockingRequestIsSettledAtOnce) {
  UniqueFd holder = Open();
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_SH));
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(PathRequest(LOCK_EX | LOCK_NB), &w));
  EXPECT_FALSE(w->threaded());
  Lock lock;
  EXPECT_ERR(EWOULDBLOCK, w->Finish(&lock));
}

TEST_F(WaiterTest, CancelAndDestroyEndABlockedWait) {
  const int fds = CountOpenFds();
  const int tasks = CountTasks();
  UniqueFd holder = Open();
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  for (bool destroy : {false, true}) {
    std::unique_ptr<Waiter> w;
    ASSERT_OK(Waiter::Start(PathRequest(LOCK_EX), &w));
    ASSERT_TRUE(WaitForFlockWaiter(ino_));
    EXPECT_EQ(tasks + 1, CountTasks());
    if (destroy) {
      w.reset();
    } else {
      w->Cancel();
      EXPECT_TRUE(w->Ended());
      EXPECT_TRUE(Readable(w->fd(), 0));
      Lock lock;
      EXPECT_ERR(ECANCELED, w->Finish(&lock));
      w.reset();
    }
    EXPECT_FALSE(FlockWaiterListed(ino_));
    EXPECT_EQ(tasks, CountTasks());
  }
  holder.reset();
  EXPECT_TRUE(FreeFor(LOCK_EX));
  EXPECT_EQ(fds, CountOpenFds());
}

TEST_F(WaiterTest, CancelAfterTheGrantReleasesTheLock) {
  UniqueFd holder = Open();
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(PathRequest(LOCK_SH), &w));
  ASSERT_TRUE(WaitForFlockWaiter(ino_));
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_UN));
  ASSERT_TRUE(Readable(w->fd(), 10000));
  EXPECT_FALSE(FreeFor(LOCK_EX));  // granted, not yet handed out
  w->Cancel();
  EXPECT_TRUE(FreeFor(LOCK_EX));
  Lock lock;
  EXPECT_ERR(ECANCELED, w->Finish(&lock));
}

TEST_F(WaiterTest, CallerMayCloseItsDescriptorAtOnce) {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 10;
  fl.l_len = 10;
  int ready[2];
  ASSERT_EQ(0, ::pipe(ready));
  const pid_t child = ::fork();
  if (child == 0) {
    // A holder in another process, so both lock modes conflict in the kernel.
    UniqueFd fd = Open();
    const char c = ::fcntl(fd.get(), F_SETLK, &fl) == 0 ? 'y' : 'n';
    if (::write(ready[1], &c, 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(1, ::read(ready[0], &c, 1));
  ::close(ready[0]);
  ASSERT_EQ('y', c);
  ASSERT_FALSE(RangeFree(10, 10));
  WaitRequest r;
  UniqueFd mine = Open();
  r.fd = mine.get();
  r.whole = false;
  r.mode = LOCK_EX;
  r.start = 15;
  r.end = 25;
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(r, &w));
  mine.reset();  // the waiter keeps its own duplicate
  EXPECT_FALSE(w->Ended());
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(Readable(w->fd(), 10000));
  Lock lock;
  ASSERT_OK(w->Finish(&lock));
  EXPECT_FALSE(lock.whole());
  EXPECT_FALSE(RangeFree(20, 1));
  EXPECT_TRUE(RangeFree(10, 5));
  lock.Release();
  EXPECT_TRUE(RangeFree(15, 10));
}

TEST_F(WaiterTest, SignalDispositionIsHeldOnlyWhileAWaitIsPending) {
  struct sigaction before {}, during {}, after {};
  ASSERT_EQ(0, ::sigaction(TimerSignal(), nullptr, &before));
  sigset_t mask_before, mask_after;
  ASSERT_EQ(0, ::pthread_sigmask(SIG_SETMASK, nullptr, &mask_before));
  UniqueFd holder = Open();
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(PathRequest(LOCK_EX), &w));
  ASSERT_TRUE(WaitForFlockWaiter(ino_));
  ASSERT_EQ(0, ::sigaction(TimerSignal(), nullptr, &during));
  EXPECT_NE(before.sa_handler, during.sa_handler);
  w.reset();
  ASSERT_EQ(0, ::sigaction(TimerSignal(), nullptr, &after));
  ASSERT_EQ(0, ::pthread_sigmask(SIG_SETMASK, nullptr, &mask_after));
  EXPECT_EQ(before.sa_handler, after.sa_handler);
  EXPECT_EQ(before.sa_flags, after.sa_flags);
  for (int sig = 1; sig < SIGRTMAX; ++sig) {
    EXPECT_EQ(sigismember(&mask_before, sig), sigismember(&mask_after, sig)) << sig;
  }
}

TEST_F(WaiterTest, ForkedChildCopyIsInert) {
  UniqueFd holder = Open();
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(PathRequest(LOCK_EX), &w));
  ASSERT_TRUE(WaitForFlockWaiter(ino_));
  struct sigaction before {};
  const pid_t child = ::fork();
  if (child == 0) {
    int code = 0;
    if (w->InOwnerProcess()) code |= 1;
    if (w->Ended()) code |= 2;
    Lock lock;
    if (w->Finish(&lock).err() != EPERM) code |= 4;
    w->Cancel();
    w.reset();
    // The parent's handler hold does not exist here.
    if (::sigaction(TimerSignal(), nullptr, &before) != 0 || before.sa_handler != SIG_DFL) {
      code |= 8;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(child, ::waitpid(child, &status, 0));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(0, WEXITSTATUS(status));
  EXPECT_FALSE(w->Ended());
  EXPECT_TRUE(FlockWaiterListed(ino_));
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_UN));
  ASSERT_TRUE(Readable(w->fd(), 10000));
  Lock lock;
  ASSERT_OK(w->Finish(&lock));
  EXPECT_FALSE(FreeFor(LOCK_SH));
}

TEST_F(WaiterTest, GrantedLockComposesWithTheOwnersOtherLocks) {
  UniqueFd fd = Open();
  Lock shared;
  ASSERT_OK(shared.AcquireDescriptor(fd.get(), LOCK_SH, 0, 100, Deadline::Never()));
  WaitRequest r;
  r.fd = fd.get();
  r.whole = false;
  r.mode = LOCK_EX;
  r.start = 40;
  r.end = 60;
  std::unique_ptr<Waiter> w;
  ASSERT_OK(Waiter::Start(r, &w));
  Lock exclusive;
  ASSERT_OK(w->Finish(&exclusive));
  w.reset();
  exclusive.Release();
  // The shared guard's bytes stay locked (shared) after the other goes.
  EXPECT_FALSE(RangeFree(50, 1));
  shared.Release();
  EXPECT_TRUE(RangeFree(0, 100));
}

// Cancel racing with the grant: the holder lets go on another thread while
// the owner cancels, in random order and timing. Whatever wins, nothing
// stays locked and no thread or descriptor is left.
TEST_F(WaiterTest, CancelRacingWithGrantLeavesNothingHeld) {
  const char* env = ::getenv("LOCKER_TEST_SEED");
  const unsigned seed = env ? static_cast<unsigned>(::strtoul(env, nullptr, 10))
                            : static_cast<unsigned>(::time(nullptr) ^ ::getpid());
  std::printf("seed %u; rerun with LOCKER_TEST_SEED=%u\n", seed, seed);
  std::mt19937 random(seed);
  const char* rounds_env = ::getenv("LOCKER_RACE_ROUNDS");
  const int rounds = rounds_env ? ::atoi(rounds_env) : 10000;
  const int fds = CountOpenFds();
  const int tasks = CountTasks();
  UniqueFd holder = Open();
  int granted = 0, cancelled = 0, cancelled_pending = 0;
  for (int round = 0; round < rounds; ++round) {
    // Classic locks of one process do not conflict in the kernel, so with
    // them every round is a whole-file one.
    const bool range = UsingOfdLocks() && random() % 2 == 0;
    struct flock fl {};
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    if (range) {
      fl.l_type = F_WRLCK;
      ASSERT_EQ(0, ::fcntl(holder.get(), F_OFD_SETLK, &fl));
    } else {
      ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
    }
    WaitRequest r = PathRequest(LOCK_EX);
    if (range) {
      r.whole = false;
      r.start = 0;
      r.end = 1;
    }
    std::unique_ptr<Waiter> w;
    ASSERT_OK(Waiter::Start(r, &w));
    const unsigned spin = random() % 2000;
    std::thread release([&] {
      for (volatile unsigned i = 0; i < spin; ++i) {
      }
      if (range) {
        fl.l_type = F_UNLCK;
        ::fcntl(holder.get(), F_OFD_SETLK, &fl);
      } else {
        ::flock(holder.get(), LOCK_UN);
      }
    });
    const unsigned wait = random() % 2000;
    for (volatile unsigned i = 0; i < wait; ++i) {
    }
    if (random() % 4 != 0) {
      if (!w->Ended()) ++cancelled_pending;
      w->Cancel();
    }
    release.join();
    Lock lock;
    const Status outcome = [&] {
      if (!Readable(w->fd(), 10000)) return Status::Error(EINPROGRESS);
      return w->Finish(&lock);
    }();
    ASSERT_TRUE(outcome.ok() || outcome.err() == ECANCELED) << ErrName(outcome.err());
    outcome.ok() ? ++granted : ++cancelled;
    w.reset();
    lock.Release();
    ASSERT_TRUE(range ? RangeFree(0, 1) : FreeFor(LOCK_EX)) << "round " << round;
  }
  std::printf("%d granted, %d cancelled; cancel came before the end %d times\n", granted,
              cancelled, cancelled_pending);
  // Both sides of the race were run.
  EXPECT_GT(granted, 0);
  EXPECT_GT(cancelled_pending, 0);
  holder.reset();
  EXPECT_EQ(tasks, CountTasks());
  EXPECT_EQ(fds, CountOpenFds());
}

}  // namespace
}  // namespace locker
