// Tests for OpenLockFile and whole-file Locks: flock(2) locks held by a
// guard through a path or a caller's descriptor, and lock files in shared
// directories. How locks on one open file description compose is tested
// in registry_test.cc.
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

#include <chrono>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <utility>

#include "deadline.h"
#include "process.h"
#include "status.h"
#include "test_util.h"
#include "unique_fd.h"

namespace locker {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

ino_t InodeOfPath(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

ino_t InodeOfFd(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

// Writes `content` to a new file at path (replacing nothing).
void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in),
                     std::istreambuf_iterator<char>());
}

// Installs a SIGUSR1 handler without SA_RESTART for the scope, so that a
// blocking wait it interrupts sees EINTR.
class Usr1Handler final {
 public:
  Usr1Handler() {
    struct sigaction action {};
    action.sa_handler = CountUsr1;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGUSR1, &action, &old_);
  }
  ~Usr1Handler() { ::sigaction(SIGUSR1, &old_, nullptr); }

 private:
  struct sigaction old_;
};

// Runs fn() in a thread that is blocked in flock(2) on `ino`, interrupting it
// with SIGUSR1 until fn returns; returns what it returned.
template <typename Fn>
Status RunInterrupted(ino_t ino, Fn&& fn) {
  Usr1Handler handler;
  std::promise<Status> outcome;
  std::future<Status> result = outcome.get_future();
  std::thread worker([&] { outcome.set_value(fn()); });
  EXPECT_TRUE(WaitForFlockWaiter(ino)) << "the wait never started";
  // A signal can still land just before the blocking call: send until done.
  while (result.wait_for(milliseconds(20)) != std::future_status::ready) {
    ::pthread_kill(worker.native_handle(), SIGUSR1);
  }
  worker.join();
  return result.get();
}

class WholeLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty()) << "mkdtemp: " << strerror(errno);
    path_ = dir_.path() + "/lock";
  }

  // A new open file description of path (created if missing).
  UniqueFd Open(const std::string& path, int flags = O_RDWR) {
    UniqueFd fd(::open(path.c_str(), flags | O_CREAT | O_CLOEXEC, 0600));
    EXPECT_TRUE(fd.valid()) << path << ": " << strerror(errno);
    return fd;
  }

  // Runs lock->AcquirePath(path_, mode, PathOptions(), Deadline::After(10))
  // in another thread; the future has what it returned once it is done.
  std::future<Status> AcquirePathInThread(Lock* lock, int mode) {
    return std::async(std::launch::async, [this, lock, mode] {
      return lock->AcquirePath(path_, mode, PathOptions(), Deadline::After(10));
    });
  }

  // Whether a separate descriptor could take `op` on path right now.
  bool CanLock(const std::string& path, int op) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    EXPECT_TRUE(fd.valid()) << path << ": " << strerror(errno);
    return ::flock(fd.get(), op | LOCK_NB) == 0;
  }

  TempDir dir_;
  std::string path_;
};

// ---- OpenLockFile ----------------------------------------------------------

TEST_F(WholeLockTest, OpenLockFileCreatesWithPermsAndCloexec) {
  const mode_t old_umask = ::umask(0);
  PathOptions options;
  options.perms = 0640;
  UniqueFd fd;
  bool writable = false;
  const Status status = OpenLockFile(path_, options, &fd, &writable);

  const std::string second = dir_.path() + "/second";
  ::umask(027);
  options.perms = 0666;
  UniqueFd fd2;
  bool writable2 = false;
  const Status status2 = OpenLockFile(second, options, &fd2, &writable2);
  ::umask(old_umask);

  ASSERT_OK(status);
  EXPECT_TRUE(fd.valid());
  EXPECT_TRUE(writable);
  struct stat st;
  ASSERT_EQ(0, ::fstat(fd.get(), &st));
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(0640u, st.st_mode & 07777);
  EXPECT_EQ(FD_CLOEXEC, ::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(O_RDWR, ::fcntl(fd.get(), F_GETFL) & O_ACCMODE);

  ASSERT_OK(status2);
  ASSERT_EQ(0, ::fstat(fd2.get(), &st));
  EXPECT_EQ(0640u, st.st_mode & 07777);  // 0666 less umask 027
}

TEST_F(WholeLockTest, OpenLockFileNeverTruncates) {
  WriteFile(path_, "precious content");
  UniqueFd fd;
  bool writable = false;
  ASSERT_OK(OpenLockFile(path_, PathOptions(), &fd, &writable));
  EXPECT_TRUE(writable);
  EXPECT_EQ("precious content", ReadFile(path_));
  struct stat st;
  ASSERT_EQ(0, ::fstat(fd.get(), &st));
  EXPECT_EQ(16, st.st_size);
}

TEST_F(WholeLockTest, OpenLockFileWithoutCreate) {
  PathOptions options;
  options.create = false;
  UniqueFd fd;
  bool writable = false;
  EXPECT_ERR(ENOENT, OpenLockFile(path_, options, &fd, &writable));
  EXPECT_FALSE(fd.valid());
  EXPECT_FALSE(Exists(path_));

  WriteFile(path_, "x");
  EXPECT_OK(OpenLockFile(path_, options, &fd, &writable));
  EXPECT_TRUE(fd.valid());
}

TEST_F(WholeLockTest, OpenLockFileRefusesSymlinksWithEloop) {
  const std::string target = dir_.path() + "/target";
  WriteFile(target, "t");
  ASSERT_EQ(0, ::symlink(target.c_str(), path_.c_str()));
  const std::string dangling = dir_.path() + "/dangling";
  const std::string missing = dir_.path() + "/missing";
  ASSERT_EQ(0, ::symlink(missing.c_str(), dangling.c_str()));
  const std::string to_dir = dir_.path() + "/to-dir";
  ASSERT_EQ(0, ::symlink(dir_.path().c_str(), to_dir.c_str()));

  for (const bool create : {true, false}) {
    SCOPED_TRACE(create ? "create" : "no create");
    PathOptions options;
    options.create = create;
    UniqueFd fd;
    bool writable = false;
    EXPECT_ERR(ELOOP, OpenLockFile(path_, options, &fd, &writable));
    EXPECT_ERR(ELOOP, OpenLockFile(dangling, options, &fd, &writable));
    EXPECT_ERR(ELOOP, OpenLockFile(to_dir, options, &fd, &writable));
    EXPECT_FALSE(fd.valid());
  }
  EXPECT_FALSE(Exists(missing)) << "created the symlink's target";
}

TEST_F(WholeLockTest, OpenLockFileFollowsSymlinksWhenAsked) {
  const std::string target = dir_.path() + "/target";
  WriteFile(target, "t");
  ASSERT_EQ(0, ::symlink(target.c_str(), path_.c_str()));
  PathOptions options;
  options.follow_symlinks = true;
  UniqueFd fd;
  bool writable = false;
  ASSERT_OK(OpenLockFile(path_, options, &fd, &writable));
  EXPECT_TRUE(writable);
  EXPECT_EQ(InodeOfPath(target), InodeOfFd(fd.get()));
  EXPECT_FALSE(PathNamesInode(path_, true, 0, 0));
  struct stat st;
  ASSERT_EQ(0, ::fstat(fd.get(), &st));
  EXPECT_TRUE(PathNamesInode(path_, true, st.st_dev, st.st_ino));
  EXPECT_FALSE(
      PathNamesInode(path_, false, st.st_dev, st.st_ino));  // the link itself
}

TEST_F(WholeLockTest, OpenLockFileOpensDirectoriesReadOnly) {
  for (const bool create : {true, false}) {
    SCOPED_TRACE(create ? "create" : "no create");
    PathOptions options;
    options.create = create;
    UniqueFd fd;
    bool writable = true;
    ASSERT_OK(OpenLockFile(dir_.path(), options, &fd, &writable));
    EXPECT_FALSE(writable);
    struct stat st;
    ASSERT_EQ(0, ::fstat(fd.get(), &st));
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(0, ::flock(fd.get(), LOCK_EX | LOCK_NB));
  }
}

TEST_F(WholeLockTest, OpenLockFileFallsBackToReadOnly) {
  // A running executable cannot be opened for writing (ETXTBSY), even by root.
  PathOptions options;
  options.create = false;
  options.follow_symlinks = true;
  UniqueFd fd;
  bool writable = true;
  ASSERT_OK(OpenLockFile("/proc/self/exe", options, &fd, &writable));
  EXPECT_FALSE(writable);
  EXPECT_EQ(O_RDONLY, ::fcntl(fd.get(), F_GETFL) & O_ACCMODE);
  EXPECT_EQ(0, ::flock(fd.get(), LOCK_SH | LOCK_NB));

  if (::geteuid() == 0) return;  // root may write any file: no EACCES case
  WriteFile(path_, "x");
  ASSERT_EQ(0, ::chmod(path_.c_str(), 0444));
  fd.reset();
  ASSERT_OK(OpenLockFile(path_, PathOptions(), &fd, &writable));
  EXPECT_FALSE(writable);
}

// ---- Lock through a path -----------------------------------------------------

TEST_F(WholeLockTest, AcquirePathAndRelease) {
  Lock lock;
  EXPECT_TRUE(lock.released());
  ASSERT_OK(lock.AcquirePath(path_, LOCK_EX, PathOptions(), Deadline::Never()));
  EXPECT_TRUE(lock.held());
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_EX, lock.mode());
  EXPECT_EQ(path_, lock.path());
  EXPECT_TRUE(lock.writable());
  EXPECT_TRUE(lock.InOwnerProcess());
  EXPECT_EQ(InodeOfPath(path_), InodeOfFd(lock.fd()));
  EXPECT_FALSE(CanLock(path_, LOCK_SH));

  lock.Release();
  EXPECT_TRUE(lock.released());
  EXPECT_EQ(-1, lock.fd());
  EXPECT_TRUE(CanLock(path_, LOCK_EX));
  EXPECT_TRUE(Exists(path_));  // no unlink asked for
  lock.Release();              // a second call does nothing
  EXPECT_TRUE(lock.released());
}

TEST_F(WholeLockTest, AcquirePathShared) {
  Lock a, b;
  ASSERT_OK(a.AcquirePath(path_, LOCK_SH, PathOptions(), Deadline::Never()));
  ASSERT_OK(b.AcquirePath(path_, LOCK_SH | LOCK_NB, PathOptions(),
                          Deadline::Never()));
  EXPECT_EQ(LOCK_SH, b.mode());  // LOCK_NB is not part of the mode
  EXPECT_TRUE(CanLock(path_, LOCK_SH));
  EXPECT_FALSE(CanLock(path_, LOCK_EX));
  Lock c;
  EXPECT_ERR(EWOULDBLOCK, c.AcquirePath(path_, LOCK_EX | LOCK_NB, PathOptions(),
                                        Deadline::Never()));
  EXPECT_TRUE(c.released());
}

TEST_F(WholeLockTest, AcquirePathBusyAndTimedOut) {
  UniqueFd holder = Open(path_);
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  const int fds = CountOpenFds();
  Lock lock;
  EXPECT_ERR(EWOULDBLOCK, lock.AcquirePath(path_, LOCK_EX | LOCK_NB,
                                           PathOptions(), Deadline::After(5)));
  EXPECT_ERR(EWOULDBLOCK,
             lock.AcquirePath(path_, LOCK_SH, PathOptions(), Deadline::Now()));
  const auto start = steady_clock::now();
  EXPECT_ERR(ETIMEDOUT, lock.AcquirePath(path_, LOCK_SH, PathOptions(),
                                         Deadline::After(0.1)));
  EXPECT_GE(Since(start), 100);
  EXPECT_TRUE(lock.released());
  EXPECT_EQ(fds, CountOpenFds()) << "a failed acquire left a descriptor open";
}

TEST_F(WholeLockTest, AcquirePathOnADirectory) {
  Lock lock;
  ASSERT_OK(
      lock.AcquirePath(dir_.path(), LOCK_EX, PathOptions(), Deadline::Never()));
  EXPECT_FALSE(lock.writable());
  EXPECT_FALSE(CanLock(dir_.path(), LOCK_SH));
  lock.Release();
  EXPECT_TRUE(CanLock(dir_.path(), LOCK_EX));
}

TEST_F(WholeLockTest, AcquirePathRefusesASymlink) {
  const std::string target = dir_.path() + "/target";
  WriteFile(target, "");
  ASSERT_EQ(0, ::symlink(target.c_str(), path_.c_str()));
  Lock lock;
  EXPECT_ERR(ELOOP, lock.AcquirePath(path_, LOCK_EX, PathOptions(),
                                     Deadline::Never()));
  PathOptions follow;
  follow.follow_symlinks = true;
  ASSERT_OK(lock.AcquirePath(path_, LOCK_EX, follow, Deadline::Never()));
  EXPECT_FALSE(CanLock(target, LOCK_SH));
}

TEST_F(WholeLockTest, ReleaseWithUnlinkRemovesTheFile) {
  PathOptions options;
  options.unlink = true;
  for (const int mode : {LOCK_EX, LOCK_SH}) {
    Lock lock;
    ASSERT_OK(lock.AcquirePath(path_, mode, options, Deadline::Never()));
    ASSERT_TRUE(Exists(path_));
    lock.Release();
    EXPECT_FALSE(Exists(path_)) << "mode " << mode;
  }
}

TEST_F(WholeLockTest, ReleaseWithUnlinkSparesAReplacedFile) {
  PathOptions options;
  options.unlink = true;
  Lock lock;
  ASSERT_OK(lock.AcquirePath(path_, LOCK_EX, options, Deadline::Never()));
  const std::string replacement = dir_.path() + "/replacement";
  WriteFile(replacement, "new");
  const ino_t new_inode = InodeOfPath(replacement);
  ASSERT_EQ(0, ::rename(replacement.c_str(), path_.c_str()));

  lock.Release();
  ASSERT_TRUE(Exists(path_)) << "removed a file it had not locked";
  EXPECT_EQ(new_inode, InodeOfPath(path_));
  EXPECT_EQ("new", ReadFile(path_));
}

TEST_F(WholeLockTest, ReleaseWithUnlinkSparesAFileOthersHold) {
  PathOptions options;
  options.unlink = true;
  Lock first, second;
  ASSERT_OK(first.AcquirePath(path_, LOCK_SH, options, Deadline::Never()));
  ASSERT_OK(second.AcquirePath(path_, LOCK_SH, options, Deadline::Never()));
  first.Release();
  EXPECT_TRUE(Exists(path_)) << "removed while another holder had it locked";
  EXPECT_FALSE(CanLock(path_, LOCK_EX));  // the second holder still holds it
  second.Release();
  EXPECT_FALSE(Exists(path_));
}

TEST_F(WholeLockTest, AcquirePathRetriesWhenTheFileIsReplacedWhileWaiting) {
  UniqueFd old_file = Open(path_);
  ASSERT_EQ(0, ::flock(old_file.get(), LOCK_EX));
  const ino_t old_inode = InodeOfFd(old_file.get());

  Lock lock;
  std::future<Status> result = AcquirePathInThread(&lock, LOCK_EX);
  ASSERT_TRUE(WaitForFlockWaiter(old_inode))
      << "the waiter never blocked on the old file";

  const std::string replacement = dir_.path() + "/replacement";
  WriteFile(replacement, "");
  const ino_t new_inode = InodeOfPath(replacement);
  ASSERT_EQ(0, ::rename(replacement.c_str(), path_.c_str()));
  ASSERT_EQ(0, ::flock(old_file.get(), LOCK_UN));
  result.wait();

  ASSERT_OK(result.get());
  EXPECT_TRUE(lock.held());
  EXPECT_EQ(new_inode, InodeOfFd(lock.fd())) << "locked the orphaned file";
  EXPECT_EQ(InodeOfPath(path_), InodeOfFd(lock.fd()));
  EXPECT_FALSE(CanLock(path_, LOCK_SH));
  EXPECT_EQ(0, ::flock(old_file.get(), LOCK_EX | LOCK_NB))
      << "still holds the old file";
}

TEST_F(WholeLockTest, AcquirePathRetriesWhenTheFileIsRemovedWhileWaiting) {
  UniqueFd old_file = Open(path_);
  ASSERT_EQ(0, ::flock(old_file.get(), LOCK_EX));
  const ino_t old_inode = InodeOfFd(old_file.get());

  Lock lock;
  std::future<Status> result = AcquirePathInThread(&lock, LOCK_SH);
  ASSERT_TRUE(WaitForFlockWaiter(old_inode))
      << "the waiter never blocked on the old file";
  ASSERT_EQ(0, ::unlink(path_.c_str()));
  ASSERT_EQ(0, ::flock(old_file.get(), LOCK_UN));
  result.wait();

  ASSERT_OK(result.get());
  ASSERT_TRUE(Exists(path_)) << "the lock file was not created again";
  EXPECT_EQ(InodeOfPath(path_), InodeOfFd(lock.fd()));
  EXPECT_FALSE(CanLock(path_, LOCK_EX));
}

TEST_F(WholeLockTest, InterruptedAcquirePathLeavesNothingBehind) {
  UniqueFd holder = Open(path_);
  ASSERT_EQ(0, ::flock(holder.get(), LOCK_EX));
  const int fds = CountOpenFds();
  Lock lock;
  const Status status = RunInterrupted(InodeOfFd(holder.get()), [&] {
    return lock.AcquirePath(path_, LOCK_EX, PathOptions(), Deadline::After(10));
  });
  EXPECT_ERR(EINTR, status);
  EXPECT_TRUE(lock.released());
  EXPECT_EQ(fds, CountOpenFds());
}

// ---- Lock on a caller's descriptor -------------------------------------------

TEST_F(WholeLockTest, AcquireDescriptorAndRelease) {
  UniqueFd fd = Open(path_, O_RDONLY);  // flock(2) needs no write access
  Lock lock;
  ASSERT_OK(lock.AcquireDescriptor(fd.get(), LOCK_EX, Deadline::Never()));
  EXPECT_TRUE(lock.held());
  EXPECT_TRUE(lock.path().empty());
  EXPECT_FALSE(lock.writable());
  // The lock keeps a close-on-exec duplicate of its own, of the same open
  // file description.
  ASSERT_NE(-1, lock.fd());
  EXPECT_NE(fd.get(), lock.fd());
  EXPECT_EQ(FD_CLOEXEC, ::fcntl(lock.fd(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(InodeOfFd(fd.get()), InodeOfFd(lock.fd()));
  EXPECT_EQ(0, ::flock(fd.get(), LOCK_EX | LOCK_NB))
      << "the caller's descriptor is not the locked open file description";
  EXPECT_FALSE(CanLock(path_, LOCK_SH));

  const int duplicate = lock.fd();
  lock.Release();
  EXPECT_TRUE(lock.released());
  EXPECT_EQ(-1, lock.fd());
  EXPECT_TRUE(CanLock(path_, LOCK_EX)) << "released, yet still locked";
  EXPECT_EQ(-1, ::fcntl(duplicate, F_GETFD)) << "its duplicate stayed open";
  ASSERT_NE(-1, ::fcntl(fd.get(), F_GETFD))
      << "the caller's descriptor was closed";

  // Released by the destructor too; the caller's descriptor stays open.
  {
    Lock scoped;
    ASSERT_OK(scoped.AcquireDescriptor(fd.get(), LOCK_SH, Deadline::Now()));
    EXPECT_FALSE(CanLock(path_, LOCK_EX));
  }
  EXPECT_TRUE(CanLock(path_, LOCK_EX));
  ASSERT_NE(-1, ::fcntl(fd.get(), F_GETFD));
}

TEST_F(WholeLockTest, CallerMayCloseItsDescriptor) {
  const int fds = CountOpenFds();
  {
    Lock lock;
    {
      UniqueFd fd = Open(path_, O_RDONLY);
      ASSERT_OK(lock.AcquireDescriptor(fd.get(), LOCK_EX, Deadline::Never()));
    }  // the caller closes its descriptor under the live lock
    EXPECT_TRUE(lock.held());
    EXPECT_FALSE(CanLock(path_, LOCK_SH))
        << "closing the caller's descriptor dropped the lock";
    // A forked child sees it too.
    EXPECT_EQ(0, RunInChild([&] { return CanLock(path_, LOCK_SH) ? 1 : 0; }));
    ASSERT_OK(lock.Downgrade());
    EXPECT_TRUE(CanLock(path_, LOCK_SH));
    EXPECT_FALSE(CanLock(path_, LOCK_EX));
    ASSERT_OK(lock.Upgrade(Deadline::Now()));
    EXPECT_FALSE(CanLock(path_, LOCK_SH));
  }
  EXPECT_TRUE(CanLock(path_, LOCK_EX));
  EXPECT_EQ(fds, CountOpenFds());
}

TEST_F(WholeLockTest, AcquireDescriptorErrors) {
  Lock lock;
  EXPECT_ERR(EBADF, lock.AcquireDescriptor(-1, LOCK_EX, Deadline::Never()));
  UniqueFd fd = Open(path_);
  EXPECT_ERR(EINVAL, lock.AcquireDescriptor(fd.get(), LOCK_SH | LOCK_EX,
                                            Deadline::Never()));
  EXPECT_TRUE(lock.released());
}

// ---- Upgrade and Downgrade --------------------------------------------------

TEST_F(WholeLockTest, UpgradeAndDowngradeWhenUncontended) {
  Lock lock;
  EXPECT_ERR(ENOLCK, lock.Upgrade(Deadline::Never()));
  EXPECT_ERR(ENOLCK, lock.Downgrade());

  ASSERT_OK(lock.AcquirePath(path_, LOCK_SH, PathOptions(), Deadline::Never()));
  EXPECT_OK(lock.Upgrade(Deadline::Now()));
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_EX, lock.mode());
  EXPECT_FALSE(CanLock(path_, LOCK_SH));
  EXPECT_OK(lock.Upgrade(Deadline::Now()));  // already exclusive
  EXPECT_EQ(LOCK_EX, lock.mode());

  EXPECT_OK(lock.Downgrade());
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());
  EXPECT_TRUE(CanLock(path_, LOCK_SH));
  EXPECT_FALSE(CanLock(path_, LOCK_EX));
  EXPECT_OK(lock.Downgrade());  // already shared
  EXPECT_EQ(LOCK_SH, lock.mode());

  lock.Release();
  EXPECT_ERR(ENOLCK, lock.Upgrade(Deadline::Now()));
  EXPECT_ERR(ENOLCK, lock.Downgrade());
}

TEST_F(WholeLockTest, FailedUpgradeTakesTheSharedLockBack) {
  UniqueFd other = Open(path_);
  Lock lock;
  ASSERT_OK(lock.AcquirePath(path_, LOCK_SH, PathOptions(), Deadline::Never()));
  ASSERT_EQ(0, ::flock(other.get(), LOCK_SH));

  EXPECT_ERR(EWOULDBLOCK, lock.Upgrade(Deadline::Now()));
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());

  const auto start = steady_clock::now();
  EXPECT_ERR(ETIMEDOUT, lock.Upgrade(Deadline::After(0.2)));
  EXPECT_GE(Since(start), 200);
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());

  // The shared lock really is held: with the other holder gone, nobody else
  // can take the file exclusively.
  ASSERT_EQ(0, ::flock(other.get(), LOCK_UN));
  EXPECT_FALSE(CanLock(path_, LOCK_EX));
  EXPECT_TRUE(CanLock(path_, LOCK_SH));
  EXPECT_OK(lock.Upgrade(Deadline::Now()));
  EXPECT_EQ(LOCK_EX, lock.mode());
}

TEST_F(WholeLockTest, InterruptedUpgradeIsLostUntilRetried) {
  UniqueFd other = Open(path_);
  Lock lock;
  ASSERT_OK(lock.AcquirePath(path_, LOCK_SH, PathOptions(), Deadline::Never()));
  ASSERT_EQ(0, ::flock(other.get(), LOCK_SH));
  const ino_t inode = InodeOfPath(path_);

  EXPECT_ERR(EINTR, RunInterrupted(inode, [&] {
               return lock.Upgrade(Deadline::After(10));
             }));
  // flock(2) dropped the shared lock to wait, and the wait failed while
  // the other holder was still there: the lock is lost, not released.
  EXPECT_FALSE(lock.held());
  EXPECT_FALSE(lock.released());
  // That is the truth: with the other holder gone the file is free.
  ASSERT_EQ(0, ::flock(other.get(), LOCK_UN));
  EXPECT_TRUE(CanLock(path_, LOCK_EX));

  // From there, Downgrade takes a shared lock.
  EXPECT_OK(lock.Downgrade());
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());
  EXPECT_FALSE(CanLock(path_, LOCK_EX));

  // Lost again; then a busy Upgrade takes the shared lock back.
  ASSERT_EQ(0, ::flock(other.get(), LOCK_SH));
  EXPECT_ERR(EINTR, RunInterrupted(inode, [&] {
               return lock.Upgrade(Deadline::After(10));
             }));
  EXPECT_FALSE(lock.held());
  EXPECT_ERR(EWOULDBLOCK, lock.Upgrade(Deadline::Now()));
  EXPECT_TRUE(lock.held());
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_SH, lock.mode());

  // Lost again; an uncontended Upgrade takes the exclusive lock.
  EXPECT_ERR(EINTR, RunInterrupted(inode, [&] {
               return lock.Upgrade(Deadline::After(10));
             }));
  ASSERT_EQ(0, ::flock(other.get(), LOCK_UN));
  EXPECT_OK(lock.Upgrade(Deadline::Now()));
  EXPECT_EQ(Lock::State::kHeld, lock.state());
  EXPECT_EQ(LOCK_EX, lock.mode());
  EXPECT_FALSE(CanLock(path_, LOCK_SH));

  lock.Release();
  EXPECT_TRUE(lock.released());
  EXPECT_TRUE(CanLock(path_, LOCK_EX));
}

// ---- Ownership: fork --------------------------------------------------------

TEST_F(WholeLockTest, ForkedChildReleaseLeavesTheParentsLock) {
  PathOptions options;
  options.unlink = true;
  Lock lock;
  ASSERT_OK(lock.AcquirePath(path_, LOCK_EX, options, Deadline::Never()));
  ASSERT_TRUE(lock.InOwnerProcess());

  const pid_t child = ForkChildThatReleases(lock);
  ASSERT_NE(-1, child) << strerror(errno);
  int wstatus = 0;
  ASSERT_EQ(child, ::waitpid(child, &wstatus, 0));
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(0, WEXITSTATUS(wstatus) & 1)
      << "CurrentPid() in the child is the parent's";
  EXPECT_EQ(0, WEXITSTATUS(wstatus) & 2) << "the child thinks it took the lock";
  EXPECT_EQ(0, WEXITSTATUS(wstatus) & 4) << "Release in the child left it held";

  EXPECT_TRUE(lock.held());
  EXPECT_TRUE(Exists(path_)) << "the child removed the lock file";
  EXPECT_FALSE(CanLock(path_, LOCK_SH))
      << "the child's release unlocked the parent";
  EXPECT_EQ(::getpid(), CurrentPid());
  lock.Release();
  EXPECT_FALSE(Exists(path_));
}

// ---- Descriptors -------------------------------------------------------------

TEST_F(WholeLockTest, NoDescriptorLeaksOverManyCycles) {
  const std::string busy = dir_.path() + "/busy";
  UniqueFd busy_holder = Open(busy);
  ASSERT_EQ(0, ::flock(busy_holder.get(), LOCK_EX));
  const std::string link = dir_.path() + "/link";
  ASSERT_EQ(0, ::symlink(busy.c_str(), link.c_str()));
  PathOptions unlink_options;
  unlink_options.unlink = true;
  UniqueFd borrowed = Open(path_);

  const int before = CountOpenFds();
  for (int i = 0; i < 1000; ++i) {
    Lock lock;
    ASSERT_OK(lock.AcquirePath(path_, i % 2 ? LOCK_EX : LOCK_SH, PathOptions(),
                               Deadline::Never()));
    lock.Release();
    ASSERT_OK(
        lock.AcquirePath(path_, LOCK_EX, unlink_options, Deadline::After(1)));
    ASSERT_OK(lock.Upgrade(Deadline::Now()));
    ASSERT_OK(lock.Downgrade());
    // Acquiring again releases what was held first.
    ASSERT_OK(
        lock.AcquirePath(path_, LOCK_EX, unlink_options, Deadline::Now()));
    lock.Release();
    ASSERT_EQ(ErrName(EWOULDBLOCK),
              ErrName(lock.AcquirePath(busy, LOCK_EX | LOCK_NB, PathOptions(),
                                       Deadline::Never())
                          .err()));
    ASSERT_EQ(ErrName(ELOOP),
              ErrName(lock.AcquirePath(link, LOCK_EX, PathOptions(),
                                       Deadline::Never())
                          .err()));
    ASSERT_OK(lock.AcquireDescriptor(borrowed.get(), LOCK_EX, Deadline::Now()));
    // Destroyed while holding a path lock.
    ASSERT_OK(lock.AcquirePath(path_, LOCK_SH, PathOptions(), Deadline::Now()));
  }
  for (int i = 0; i < 10; ++i) {  // timed failures, which arm a timer
    Lock lock;
    ASSERT_EQ(ErrName(ETIMEDOUT),
              ErrName(lock.AcquirePath(busy, LOCK_SH, PathOptions(),
                                       Deadline::After(0.01))
                          .err()));
  }
  EXPECT_EQ(before, CountOpenFds());
  EXPECT_TRUE(CanLock(path_, LOCK_EX));
}

}  // namespace
}  // namespace locker
