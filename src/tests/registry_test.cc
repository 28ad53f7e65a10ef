// Tests for the Registry, through Lock: locks on one open file description
// (OFD) compose whatever descriptor of it they come through; closing or
// reusing a caller's descriptor number, and fork, change nothing that the
// kernel holds; offsets run to the top of off_t; the classic fallback never
// drops the process's locks by closing a descriptor and keeps a bounded
// number of them; and many threads may lock through one OFD at once.
//
// What is held is always asked of the kernel -- from another process
// (KernelProbe, RunInChild) or from another open file description -- never
// of the objects under test. The binary runs once with OFD range locks and
// once with the classic fallback (the mode is read once per process from
// FILE_LOCKER_NO_OFD); tests that concern one mode skip in the other.
#include "registry.h"

#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
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
#include <initializer_list>
#include <iostream>
#include <limits>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "deadline.h"
#include "lock.h"
#include "range_table.h"
#include "status.h"
#include "test_util.h"
#include "unique_fd.h"

namespace locker {
namespace {

// The last byte a lock can cover: 2**63 - 1 (the kernel's OFFSET_MAX).
constexpr off_t kMaxOffset = std::numeric_limits<off_t>::max();

bool Ofd() { return Registry::Get().ofd(); }

// Calls call() again for as long as it says EINTR (the engine's contract:
// run handlers, call again with the same deadline; classic in-process waits
// come back every slice).
template <typename Call>
Status UntilNotInterrupted(Call&& call) {
  Status status = call();
  while (status.err() == EINTR) status = call();
  return status;
}

// Another process holding a classic lock of `type` on [start, start+len) of
// path until Release() or destruction. A classic lock of another process
// conflicts with OFD and classic locks alike.
class HolderProcess final {
 public:
  HolderProcess(const std::string& path, short type, off_t start, off_t len) {
    int ready[2], done[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return;
    if (::pipe2(done, O_CLOEXEC) != 0) {
      ::close(ready[0]);
      ::close(ready[1]);
      return;
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      for (int fd = 3; fd < 4096; ++fd) {
        if (fd != ready[1] && fd != done[0]) ::close(fd);
      }
      const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      struct flock fl {};
      fl.l_type = type;
      fl.l_whence = SEEK_SET;
      fl.l_start = start;
      fl.l_len = len;
      const char held = fd >= 0 && ::fcntl(fd, F_SETLK, &fl) == 0;
      WriteFully(ready[1], &held, 1);
      char ignored;
      ReadFully(done[0], &ignored, 1);  // until the parent closes its end
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(done[0]);
    UniqueFd ready_in(ready[0]);
    done_.reset(done[1]);
    char held = 0;
    held_ = pid_ > 0 && ReadFully(ready_in.get(), &held, 1) && held;
  }
  HolderProcess(const HolderProcess&) = delete;
  HolderProcess& operator=(const HolderProcess&) = delete;
  ~HolderProcess() { Release(); }

  bool held() const { return held_; }

  // Ends the process, and so its lock; returns once it is gone.
  void Release() {
    done_.reset();
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  bool held_ = false;
  UniqueFd done_;
};

class RegistryTest : public TempFileTest {
 protected:
  RegistryTest() : TempFileTest("registry") {}

  InodeKey Inode() {
    struct stat st {};
    EXPECT_EQ(0, ::fstat(fd_.get(), &st));
    return InodeKey{st.st_dev, st.st_ino};
  }

  UniqueFd Dup(int fd) {
    UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    EXPECT_TRUE(dup.valid()) << strerror(errno);
    return dup;
  }

  // A new open file description of the file at descriptor number `number`,
  // which must be free: opened until the kernel hands out that number (the
  // lowest free one), as a program reopening a handle would see it.
  UniqueFd OpenOnto(int number) {
    std::vector<UniqueFd> lower;
    for (int tries = 0; tries < 64; ++tries) {
      UniqueFd fd = OpenAgain();
      if (!fd.valid() || fd.get() == number) return fd;
      if (fd.get() > number) break;
      lower.push_back(std::move(fd));
    }
    ADD_FAILURE() << "descriptor " << number << " was not handed out again";
    return UniqueFd();
  }
};

// ---- Composition on one open file description ------------------------------

TEST_F(RegistryTest, RangeGuardsThroughADupCompose) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  UniqueFd dup = Dup(fd_.get());
  Lock shared, exclusive;
  ASSERT_OK(
      shared.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 20, Deadline::Never()));
  ASSERT_OK(
      exclusive.AcquireDescriptor(dup.get(), LOCK_EX, 10, 30, Deadline::Now()))
      << "guards on one open file description stood in each other's way";
  // One open file description: one duplicate, shared by both guards.
  EXPECT_EQ(shared.fd(), exclusive.fd());
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 0, 10));
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 10, 20));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 30, 0));

  exclusive.Release();
  EXPECT_TRUE(shared.held());
  const struct flock met = probe.Ask(F_WRLCK, 10, 10);
  EXPECT_EQ(F_RDLCK, met.l_type)
      << "releasing the exclusive guard freed bytes the shared one covers";
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 0, 20));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_RDLCK, 0, 0)) << "still exclusive";
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 20, 0));

  // The other way round: releasing the shared guard leaves the exclusive one.
  ASSERT_OK(
      exclusive.AcquireDescriptor(dup.get(), LOCK_EX, 10, 30, Deadline::Now()));
  shared.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 10));
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 10, 20));
  exclusive.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

TEST_F(RegistryTest, WholeFileGuardsComposeOnOneOfd) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  UniqueFd dup = Dup(fd_.get());
  Lock exclusive, shared;
  ASSERT_OK(exclusive.AcquireDescriptor(fd_.get(), LOCK_EX, Deadline::Never()));
  ASSERT_OK(shared.AcquireDescriptor(dup.get(), LOCK_SH, Deadline::Now()));
  EXPECT_FALSE(probe.CanFlock(LOCK_SH))
      << "the shared guard turned the exclusive one's lock shared";
  EXPECT_TRUE(exclusive.held());
  EXPECT_EQ(LOCK_EX, exclusive.mode());

  exclusive.Release();
  EXPECT_TRUE(shared.held());
  EXPECT_EQ(LOCK_SH, shared.mode());
  EXPECT_TRUE(probe.CanFlock(LOCK_SH));
  EXPECT_FALSE(probe.CanFlock(LOCK_EX))
      << "releasing the exclusive guard dropped the shared one";

  // A new exclusive guard raises the description again; its release lowers.
  ASSERT_OK(exclusive.AcquireDescriptor(fd_.get(), LOCK_EX, Deadline::Now()));
  EXPECT_FALSE(probe.CanFlock(LOCK_SH));
  exclusive.Release();
  EXPECT_TRUE(probe.CanFlock(LOCK_SH));
  EXPECT_FALSE(probe.CanFlock(LOCK_EX));
  shared.Release();
  EXPECT_TRUE(probe.CanFlock(LOCK_EX));
}

TEST_F(RegistryTest, FailedExclusiveGuardLeavesTheSharedOneHeld) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  UniqueFd other = OpenAgain();
  ASSERT_EQ(0, ::flock(other.get(), LOCK_SH));
  Lock shared, exclusive;
  ASSERT_OK(shared.AcquireDescriptor(fd_.get(), LOCK_SH, Deadline::Now()));
  // flock(2) gives up the shared lock to try for the exclusive one; the
  // registry must take it back when that fails.
  EXPECT_ERR(EWOULDBLOCK,
             exclusive.AcquireDescriptor(fd_.get(), LOCK_EX, Deadline::Now()));
  EXPECT_ERR(ETIMEDOUT, UntilNotInterrupted([&] {
               return exclusive.AcquireDescriptor(fd_.get(), LOCK_EX,
                                                  Deadline::After(0.05));
             }));
  EXPECT_TRUE(exclusive.released());
  EXPECT_TRUE(shared.held());
  ASSERT_EQ(0, ::flock(other.get(), LOCK_UN));
  EXPECT_FALSE(probe.CanFlock(LOCK_EX)) << "the shared guard lost its lock";
  EXPECT_TRUE(probe.CanFlock(LOCK_SH));
}

// ---- The caller's descriptor ------------------------------------------------

TEST_F(RegistryTest, ClosingTheCallersDescriptorKeepsTheLock) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  for (const bool by_dup2 : {true, false}) {
    SCOPED_TRACE(by_dup2 ? "reopened with dup2" : "reopened with open");
    UniqueFd caller = OpenAgain();
    const int number = caller.get();
    Lock whole, range;
    ASSERT_OK(whole.AcquireDescriptor(number, LOCK_EX, Deadline::Never()));
    ASSERT_OK(
        range.AcquireDescriptor(number, LOCK_EX, 0, 100, Deadline::Never()));
    UniqueFd fresh;
    if (by_dup2) fresh = OpenAgain();  // while `number` is still taken
    caller.reset();
    EXPECT_TRUE(whole.held());
    EXPECT_FALSE(probe.CanFlock(LOCK_SH))
        << "closing the caller's descriptor dropped the whole-file lock";
    if (Ofd()) {
      // (Classic locks go with any close of the file by the process: that
      // is POSIX, and the caller's doing.)
      EXPECT_TRUE(range.held());
      EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 100))
          << "closing the caller's descriptor dropped the range lock";
    }

    UniqueFd reopened;
    if (by_dup2) {
      ASSERT_EQ(number, ::dup2(fresh.get(), number)) << strerror(errno);
      reopened.reset(number);
      fresh.reset();
    } else {
      reopened = OpenOnto(number);
      ASSERT_EQ(number, reopened.get());
    }
    // The same number, another open file description: its locks conflict.
    Lock contender;
    EXPECT_ERR(EWOULDBLOCK,
               contender.AcquireDescriptor(number, LOCK_SH | LOCK_NB,
                                           Deadline::Never()));
    EXPECT_ERR(EWOULDBLOCK, contender.AcquireDescriptor(number, LOCK_SH, 50, 60,
                                                        Deadline::Now()));
    EXPECT_ERR(EWOULDBLOCK, contender.AcquireDescriptor(number, LOCK_EX, 99, 100,
                                                        Deadline::Now()));
    EXPECT_TRUE(contender.released());
    EXPECT_FALSE(probe.CanFlock(LOCK_SH));
    if (Ofd()) {
      EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 100));
    }

    // Once the old locks are gone, the new description may lock.
    whole.Release();
    range.Release();
    EXPECT_TRUE(probe.CanFlock(LOCK_EX));
    EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
    ASSERT_OK(contender.AcquireDescriptor(number, LOCK_EX, 0, 100,
                                          Deadline::Now()));
    EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 100));
    contender.Release();
    ASSERT_OK(contender.AcquireDescriptor(number, LOCK_EX, Deadline::Now()));
    EXPECT_FALSE(probe.CanFlock(LOCK_SH));
    contender.Release();
    EXPECT_TRUE(probe.CanFlock(LOCK_EX));
  }
}

// ---- fork --------------------------------------------------------------------

TEST_F(RegistryTest, AfterForkTheChildsOwnLocksConflictWithTheParents) {
  Lock range, whole;
  ASSERT_OK(range.AcquirePath(path_, LOCK_EX, 0, 100, PathOptions(),
                              Deadline::Never()));
  ASSERT_OK(whole.AcquireDescriptor(fd_.get(), LOCK_EX, Deadline::Never()));
  const std::string path = path_;
  const int code = RunInChild([&] {
    int code = 0;
    Lock mine;
    UniqueFd own(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!own.valid()) return 64;
    // Nothing the parent holds counts as held for the child's own locks.
    if (mine.AcquirePath(path, LOCK_EX | LOCK_NB, 0, 100, PathOptions(),
                         Deadline::Never()).err() != EWOULDBLOCK ||
        mine.AcquirePath(path, LOCK_SH | LOCK_NB, 99, 100, PathOptions(),
                         Deadline::Never()).err() != EWOULDBLOCK) {
      code |= 1;
    }
    if (mine.AcquireDescriptor(own.get(), LOCK_SH | LOCK_NB,
                               Deadline::Never()).err() != EWOULDBLOCK ||
        mine.AcquireDescriptor(own.get(), LOCK_SH, 50, 51,
                               Deadline::Now()).err() != EWOULDBLOCK) {
      code |= 2;
    }
    // Letting go of its copies of the parent's locks leaves them held.
    range.Release();
    whole.Release();
    if (!range.released() || !whole.released()) code |= 4;
    if (mine.AcquirePath(path, LOCK_EX | LOCK_NB, 0, 100, PathOptions(),
                         Deadline::Never()).err() != EWOULDBLOCK ||
        mine.AcquireDescriptor(own.get(), LOCK_SH | LOCK_NB,
                               Deadline::Never()).err() != EWOULDBLOCK) {
      code |= 8;
    }
    // Bytes the parent does not hold are the child's to take.
    if (!mine.AcquireDescriptor(own.get(), LOCK_EX, 100, 200,
                                Deadline::Now()).ok()) {
      code |= 16;
    }
    mine.Release();
    return code;
  });
  EXPECT_EQ(0, code) << "1: a path lock was granted, 2: a descriptor lock was "
                        "granted, 4: a copy was not released, 8: releasing a "
                        "copy dropped the parent's lock, 16: free bytes were "
                        "refused, 64: open failed";

  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  EXPECT_TRUE(range.held());
  EXPECT_TRUE(whole.held());
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 100));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 100, 0)) << "the child left a lock";
  EXPECT_FALSE(probe.CanFlock(LOCK_SH));
  range.Release();
  whole.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
  EXPECT_TRUE(probe.CanFlock(LOCK_EX));
}

TEST_F(RegistryTest, ChildsOwnRangeLockSurvivesReleasingItsCopy) {
  // Classic locks belong to the process, so closing any descriptor of the
  // file would drop the child's own; OFD locks must not care either.
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  Lock parents;
  ASSERT_OK(parents.AcquirePath(path_, LOCK_EX, 0, 10, PathOptions(),
                                Deadline::Never()));
  int ready[2], done[2];
  ASSERT_EQ(0, ::pipe2(ready, O_CLOEXEC));
  ASSERT_EQ(0, ::pipe2(done, O_CLOEXEC));
  const pid_t child = ::fork();
  ASSERT_NE(-1, child) << strerror(errno);
  if (child == 0) {
    ::close(ready[0]);
    ::close(done[1]);
    char code = 0;
    Lock own;
    if (!own.AcquirePath(path_, LOCK_EX | LOCK_NB, 100, 110, PathOptions(),
                         Deadline::Never()).ok()) {
      code |= 1;
    }
    parents.Release();  // the child's copy
    if (!parents.released()) code |= 2;
    WriteFully(ready[1], &code, 1);
    char ignored;
    ReadFully(done[0], &ignored, 1);  // until the parent has looked
    if (!own.held()) code |= 4;
    own.Release();
    ::_exit(code);
  }
  ::close(ready[1]);
  ::close(done[0]);
  UniqueFd ready_in(ready[0]), done_out(done[1]);
  char code = -1;
  ASSERT_TRUE(ReadFully(ready_in.get(), &code, 1));
  EXPECT_EQ(0, code) << "1: the child's own lock was refused, 2: not released";

  const struct flock met = probe.Ask(F_RDLCK, 100, 10);
  EXPECT_EQ(F_WRLCK, met.l_type)
      << "releasing its copy of the parent's lock dropped the child's own";
  if (!Ofd()) {
    EXPECT_EQ(child, met.l_pid);
  }
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10))
      << "the child's release dropped the parent's lock";

  done_out.reset();
  int wstatus = 0;
  ASSERT_EQ(child, ::waitpid(child, &wstatus, 0));
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(0, WEXITSTATUS(wstatus)) << "4: the child's lock was not held";
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 100, 10));
  EXPECT_TRUE(parents.held());
  parents.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

// ---- The top of off_t -------------------------------------------------------

TEST_F(RegistryTest, OffsetsAtTheTopOfOffT) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  UniqueFd other = OpenAgain();
  Pos end = 0;
  ASSERT_OK(RangeEnd(kMaxOffset, 0, &end));
  ASSERT_EQ(kRangeEnd, end);
  Lock last;
  ASSERT_OK(last.AcquireDescriptor(fd_.get(), LOCK_EX, kMaxOffset, end,
                                   Deadline::Now()));
  const struct flock met = probe.Ask(F_RDLCK, kMaxOffset, 1);
  EXPECT_EQ(F_WRLCK, met.l_type) << "no kernel lock on byte 2**63-1";
  EXPECT_EQ(kMaxOffset, met.l_start);
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, kMaxOffset));
  Lock contender;
  EXPECT_ERR(EWOULDBLOCK, contender.AcquireDescriptor(
                              other.get(), LOCK_SH, kMaxOffset, kRangeEnd,
                              Deadline::Now()));
  EXPECT_ERR(EWOULDBLOCK, contender.AcquireDescriptor(
                              other.get(), LOCK_SH, 0, kRangeEnd,
                              Deadline::Now()));

  // [2**63-11, 2**63-1): ends at the last byte, without covering it.
  ASSERT_OK(RangeEnd(kMaxOffset - 10, 10, &end));
  ASSERT_EQ(static_cast<Pos>(kMaxOffset), end);
  ASSERT_OK(contender.AcquireDescriptor(other.get(), LOCK_EX, kMaxOffset - 10,
                                        end, Deadline::Now()))
      << "a range ending at 2**63-1 was taken to cover that byte";
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, kMaxOffset - 10, 10));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_RDLCK, 0, kMaxOffset - 10));
  last.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_RDLCK, kMaxOffset, 0))
      << "the range ending at 2**63-1 covers byte 2**63-1";
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, kMaxOffset - 1, 1));

  Conflict conflict;
  ASSERT_OK(FindConflict(fd_.get(), LOCK_SH, kMaxOffset - 20, kRangeEnd,
                         &conflict));
  ASSERT_TRUE(conflict.found);
  EXPECT_EQ(LOCK_EX, conflict.mode);
  EXPECT_EQ(static_cast<Pos>(kMaxOffset - 10), conflict.start);
  EXPECT_EQ(10u, conflict.length);
  ASSERT_OK(FindConflict(fd_.get(), LOCK_EX, kMaxOffset, kRangeEnd, &conflict));
  EXPECT_FALSE(conflict.found);

  // The whole of off_t at once, and shared on top of it through a dup.
  contender.Release();
  UniqueFd dup = Dup(fd_.get());
  Lock all, top;
  ASSERT_OK(all.AcquireDescriptor(fd_.get(), LOCK_EX, 0, kRangeEnd,
                                  Deadline::Now()));
  ASSERT_OK(top.AcquireDescriptor(dup.get(), LOCK_SH, kMaxOffset - 1, kRangeEnd,
                                  Deadline::Now()));
  all.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, kMaxOffset - 1));
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, kMaxOffset - 1, 2));
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, kMaxOffset, 1));
  top.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

// ---- The classic fallback ---------------------------------------------------

TEST_F(RegistryTest, ClassicWholeFileAndFailedLocksKeepTheRangeLocks) {
  if (Ofd()) GTEST_SKIP() << "classic fallback only";
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  const int fds = CountOpenFds();
  {
    Lock range;
    ASSERT_OK(range.AcquirePath(path_, LOCK_EX, 0, 10, PathOptions(),
                                Deadline::Never()));
    {
      Lock whole;
      ASSERT_OK(whole.AcquirePath(path_, LOCK_EX, PathOptions(), Deadline::Now()));
    }
    EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10))
        << "a whole-file lock on the path dropped the range lock";

    // Failed locks on the path: another description holds the whole file,
    // another owner in this process holds the bytes.
    ASSERT_EQ(0, ::flock(fd_.get(), LOCK_EX));
    Lock failed;
    EXPECT_ERR(EWOULDBLOCK, failed.AcquirePath(path_, LOCK_SH | LOCK_NB,
                                               PathOptions(), Deadline::Never()));
    EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10))
        << "a failed whole-file lock on the path dropped the range lock";
    ASSERT_EQ(0, ::flock(fd_.get(), LOCK_UN));
    EXPECT_ERR(EWOULDBLOCK,
               failed.AcquirePath(path_, LOCK_SH | LOCK_NB, 5, 6, PathOptions(),
                                  Deadline::Never()));
    EXPECT_ERR(ETIMEDOUT, UntilNotInterrupted([&] {
                 return failed.AcquirePath(path_, LOCK_EX, 0, 1, PathOptions(),
                                           Deadline::After(0.05));
               }));
    EXPECT_TRUE(failed.released());
    // Seen from a forked child of this process too.
    const std::string path = path_;
    EXPECT_EQ(0, RunInChild([&] {
                UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
                struct flock fl {};
                fl.l_type = F_RDLCK;
                fl.l_whence = SEEK_SET;
                fl.l_len = 10;
                if (!fd.valid() || ::fcntl(fd.get(), F_GETLK, &fl) != 0) return 2;
                return fl.l_type == F_WRLCK ? 0 : 1;
              }))
        << "the range lock was dropped";
    EXPECT_TRUE(range.held());
  }
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
  EXPECT_EQ(0u, Registry::Get().IdleDescriptors(Inode()));
  EXPECT_EQ(fds, CountOpenFds()) << "a descriptor kept aside was never closed";
}

TEST_F(RegistryTest, ClassicKeptDescriptorsStayBounded) {
  if (Ofd()) GTEST_SKIP() << "classic fallback only";
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  HolderProcess elsewhere(path_, F_WRLCK, 100, 10);
  ASSERT_TRUE(elsewhere.held());
  const int fds = CountOpenFds();
  {
    Lock held;
    ASSERT_OK(held.AcquirePath(path_, LOCK_EX, 0, 10, PathOptions(),
                               Deadline::Never()));
    const int holding = CountOpenFds();
    for (int i = 0; i < 500; ++i) {
      Conflict conflict;
      ASSERT_OK(FindConflictAt(path_, LOCK_SH, 0, 10, &conflict));
      ASSERT_TRUE(conflict.found);
      ASSERT_OK(FindConflictAt(path_, LOCK_SH, 100, 101, &conflict));
      ASSERT_TRUE(conflict.found);
      Lock failed;
      // Refused in this process (another owner), and by the kernel.
      ASSERT_ERR(EWOULDBLOCK,
                 failed.AcquirePath(path_, i % 2 ? LOCK_SH : LOCK_EX | LOCK_NB,
                                    5, 6, PathOptions(), Deadline::Now()));
      ASSERT_ERR(EWOULDBLOCK,
                 failed.AcquirePath(path_, LOCK_SH | LOCK_NB, 100, 101,
                                    PathOptions(), Deadline::Never()));
    }
    EXPECT_LE(CountOpenFds(), holding + 2)
        << "kept descriptors grew with the number of calls";
    EXPECT_LE(Registry::Get().IdleDescriptors(held.inode()), 2u);
    EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10)) << "the lock was dropped";
  }
  EXPECT_EQ(0u, Registry::Get().IdleDescriptors(Inode()));
  EXPECT_EQ(fds, CountOpenFds());
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 100));
}

// ---- Threads -----------------------------------------------------------------

// Two requests on overlapping bytes of one description are served one at a
// time: a request decided "shared" and granted after an exclusive one on the
// same bytes would otherwise turn them shared in the kernel under the
// exclusive guard. Here a shared request waits in the kernel; an exclusive
// request on part of its bytes through a dup of the same description must
// not be granted before it, and once both are granted the kernel holds the
// exclusive bytes exclusively.
TEST_F(RegistryTest, AWaitingSharedRequestDoesNotLowerAnExclusiveOne) {
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  HolderProcess blocker(path_, F_WRLCK, 50, 10);
  ASSERT_TRUE(blocker.held());
  UniqueFd dup = Dup(fd_.get());
  Lock waiting, exclusive;
  std::future<Status> shared_granted = std::async(std::launch::async, [&] {
    const Deadline deadline = Deadline::After(30);
    return UntilNotInterrupted([&] {
      return waiting.AcquireDescriptor(fd_.get(), LOCK_SH, 0, 100, deadline);
    });
  });
  struct stat st {};
  ASSERT_EQ(0, ::fstat(fd_.get(), &st));
  ASSERT_TRUE(WaitForRangeWaiter(st.st_ino)) << "the shared request never waited";
  // While the shared request is at the kernel, an overlapping request on the
  // same description is not asked for: one try says busy.
  EXPECT_ERR(EWOULDBLOCK, exclusive.AcquireDescriptor(dup.get(), LOCK_EX, 0, 10,
                                                      Deadline::Now()));
  std::future<Status> exclusive_granted = std::async(std::launch::async, [&] {
    const Deadline deadline = Deadline::After(30);
    return UntilNotInterrupted([&] {
      return exclusive.AcquireDescriptor(dup.get(), LOCK_EX, 0, 10, deadline);
    });
  });
  blocker.Release();
  ASSERT_OK(shared_granted.get());
  ASSERT_OK(exclusive_granted.get());
  EXPECT_EQ(F_WRLCK, probe.Meets(F_RDLCK, 0, 10))
      << "the exclusive guard's bytes are not exclusive";
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 10, 90));
  exclusive.Release();
  EXPECT_EQ(F_RDLCK, probe.Meets(F_WRLCK, 0, 100));
  EXPECT_EQ(F_UNLCK, probe.Meets(F_RDLCK, 0, 0));
  waiting.Release();
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
}

// The range locks granted during the stress test, by open file description:
// two descriptions must never hold conflicting modes on one byte. Records
// are added after the kernel granted a lock and removed before it is given
// back, so the record is never more than the kernel holds.
class GrantedRanges final {
 public:
  // False when the range conflicts with one another description holds.
  bool Add(int ofd, int mode, Pos start, Pos end) {
    std::lock_guard<std::mutex> hold(mutex_);
    bool clash = false;
    for (const Record& r : records_) {
      if (r.ofd != ofd && r.start < end && start < r.end &&
          (r.mode == LOCK_EX || mode == LOCK_EX)) {
        clash = true;
      }
    }
    records_.push_back({ofd, mode, start, end});
    return !clash;
  }

  void Remove(int ofd, int mode, Pos start, Pos end) {
    std::lock_guard<std::mutex> hold(mutex_);
    for (auto it = records_.begin(); it != records_.end(); ++it) {
      if (it->ofd == ofd && it->mode == mode && it->start == start &&
          it->end == end) {
        records_.erase(it);
        return;
      }
    }
    ADD_FAILURE() << "no such record";
  }

 private:
  struct Record {
    int ofd;
    int mode;
    Pos start;
    Pos end;
  };
  std::mutex mutex_;
  std::vector<Record> records_;
};

unsigned SeedFromEnvironment() {
  const char* text = ::getenv("LOCKER_TEST_SEED");
  if (text && *text) return static_cast<unsigned>(std::strtoul(text, nullptr, 10));
  return std::random_device()();
}

// kThreads threads take and release random whole-file and range locks
// through one descriptor, a dup of it and a second open of the file, with
// short waits, upgrades and downgrades; whole-file locks mix both modes on
// every handle. Range locks mix both modes on each open file description
// only when mixed_ranges is set; otherwise ranges through the first
// description are exclusive and through the second shared (they still
// conflict with each other and compose within each description). Checks
// that no two descriptions ever held conflicting ranges at once, that every
// call ended as allowed, and that in the end nothing is locked and no
// descriptor is left open. Prints its seed; LOCKER_TEST_SEED replays one.
class RegistryThreadsTest : public RegistryTest {
 protected:
  void Run(bool mixed_ranges);
};

void RegistryThreadsTest::Run(bool mixed_ranges) {
  const unsigned seed = SeedFromEnvironment();
  std::cout << "[  SEED    ] LOCKER_TEST_SEED=" << seed << "\n";
  RecordProperty("seed", std::to_string(seed));
  KernelProbe probe(path_);
  ASSERT_TRUE(probe.ok());
  UniqueFd dup = Dup(fd_.get());
  UniqueFd second = OpenAgain();
  const int fds = CountOpenFds();
  struct Handle {
    int fd;
    int ofd;  // which open file description
  };
  const Handle handles[] = {{fd_.get(), 0}, {dup.get(), 0}, {second.get(), 1}};

  constexpr int kThreads = 8;
  constexpr int kRounds = 1000;
  GrantedRanges granted_ranges;
  std::atomic<int> granted{0};
  std::atomic<int> clashes{0};
  std::atomic<int> unexpected{0};
  std::atomic<int> first_unexpected{0};
  std::atomic<int> left_held{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(seed + static_cast<unsigned>(t));
      auto below = [&rng](unsigned n) { return static_cast<unsigned>(rng() % n); };
      auto expect = [&](const Status& status, std::initializer_list<int> allowed) {
        for (int err : allowed) {
          if (status.err() == err) return;
        }
        if (unexpected.fetch_add(1) == 0) first_unexpected = status.err();
      };
      for (int round = 0; round < kRounds; ++round) {
        const Handle& handle = handles[below(3)];
        const bool whole = below(4) == 0;
        int mode = below(2) ? LOCK_EX : LOCK_SH;
        if (!whole && !mixed_ranges) mode = handle.ofd == 0 ? LOCK_EX : LOCK_SH;
        const Pos start = below(64);
        const Pos end = below(8) == 0 ? kRangeEnd : start + 1 + below(16);
        const Deadline deadline =
            below(2) ? Deadline::Now() : Deadline::After(0.001 * below(10));
        Lock lock;
        const Status status = UntilNotInterrupted([&] {
          return whole ? lock.AcquireDescriptor(handle.fd, mode, deadline)
                       : lock.AcquireDescriptor(handle.fd, mode, start, end,
                                                deadline);
        });
        if (!status.ok()) {
          expect(status, {EWOULDBLOCK, ETIMEDOUT});
          if (!lock.released()) ++left_held;
          continue;
        }
        ++granted;
        if (whole) {
          // flock(2) conversions are not atomic, so no record is kept.
          if (below(3) == 0) {
            expect(mode == LOCK_EX ? lock.Downgrade() : lock.Upgrade(Deadline::Now()),
                   {0, EWOULDBLOCK});
          }
          std::this_thread::yield();
          if (below(2)) lock.Release();  // else the destructor does
          continue;
        }
        int held_mode = mode;
        if (!granted_ranges.Add(handle.ofd, held_mode, start, end)) ++clashes;
        if (mixed_ranges && mode == LOCK_SH && below(3) == 0) {
          const Status upgraded = lock.Upgrade(Deadline::Now());
          expect(upgraded, {0, EWOULDBLOCK});
          if (upgraded.ok()) {
            if (!granted_ranges.Add(handle.ofd, LOCK_EX, start, end)) ++clashes;
            granted_ranges.Remove(handle.ofd, LOCK_SH, start, end);
            held_mode = LOCK_EX;
          }
        } else if (mixed_ranges && mode == LOCK_EX && below(3) == 0) {
          if (!granted_ranges.Add(handle.ofd, LOCK_SH, start, end)) ++clashes;
          granted_ranges.Remove(handle.ofd, LOCK_EX, start, end);
          held_mode = LOCK_SH;
          expect(lock.Downgrade(), {0});
        }
        std::this_thread::yield();
        granted_ranges.Remove(handle.ofd, held_mode, start, end);
        if (below(2)) lock.Release();  // else the destructor does
      }
    });
  }
  for (auto& thread : threads) thread.join();

  EXPECT_EQ(0, unexpected.load()) << "first: " << ErrName(first_unexpected.load());
  EXPECT_EQ(0, clashes.load())
      << "two open file descriptions held conflicting ranges at once";
  EXPECT_EQ(0, left_held.load()) << "a failed call left its lock held";
  EXPECT_GT(granted.load(), 0);
  // Nothing is left locked, and no descriptor is left open.
  EXPECT_EQ(F_UNLCK, probe.Meets(F_WRLCK, 0, 0));
  EXPECT_TRUE(probe.CanFlock(LOCK_EX));
  EXPECT_FALSE(ClassicLocksHeld(Inode()));
  EXPECT_EQ(0u, Registry::Get().IdleDescriptors(Inode()));
  EXPECT_EQ(fds, CountOpenFds());
}

TEST_F(RegistryThreadsTest, OneRangeModePerDescription) { Run(false); }

// Both range modes on every description: requests of both modes through one
// open file description must never lower each other in the kernel (see
// AWaitingSharedRequestDoesNotLowerAnExclusiveOne).
TEST_F(RegistryThreadsTest, MixedRangeModesOnOneDescription) {
  Run(true);
}

}  // namespace
}  // namespace locker
