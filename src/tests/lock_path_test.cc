// Tests for opening lock files by path (OpenLockFile, OpenQueryFile): what
// PATH may name, that opening never blocks, and the read-only fallback.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>

#include "lock_path.h"
#include "status.h"
#include "test_util.h"
#include "unique_fd.h"

namespace locker {
namespace {

class LockPathTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  std::string Path(const char* name) const { return dir_.path() + "/" + name; }

  // A FIFO at NAME with MODE (umask aside); its path.
  std::string MakeFifo(const char* name, mode_t mode) {
    const std::string path = Path(name);
    EXPECT_EQ(0, ::mkfifo(path.c_str(), mode)) << std::strerror(errno);
    EXPECT_EQ(0, ::chmod(path.c_str(), mode)) << std::strerror(errno);
    return path;
  }

  // A listening Unix socket bound at NAME; its path. The socket stays open
  // as long as the fixture.
  std::string MakeSocket(const char* name) {
    const std::string path = Path(name);
    socket_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    EXPECT_TRUE(socket_.valid()) << std::strerror(errno);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    EXPECT_EQ(0, ::bind(socket_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address))
        << std::strerror(errno);
    EXPECT_EQ(0, ::listen(socket_.get(), 1));
    return path;
  }

  TempDir dir_;
  UniqueFd socket_;
};

TEST_F(LockPathTest, RegularFileOpensReadWriteAndBlocking) {
  UniqueFd fd;
  bool writable = false;
  ASSERT_OK(OpenLockFile(Path("lock"), PathOptions(), &fd, &writable));
  EXPECT_TRUE(writable);
  const int flags = ::fcntl(fd.get(), F_GETFL);
  EXPECT_EQ(O_RDWR, flags & O_ACCMODE);
  EXPECT_EQ(0, flags & O_NONBLOCK) << "O_NONBLOCK must not stay on the lock's descriptor";
  EXPECT_EQ(FD_CLOEXEC, ::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
}

TEST_F(LockPathTest, FifoIsRefusedWithEnxioWithoutBlocking) {
  // Writable: opened read-write, which never blocks on a FIFO. Read-only
  // (for anyone but root): the read-only fallback, which used to block
  // until a writer came. Either way the answer is ENXIO, at once.
  const std::string fifos[] = {MakeFifo("rw.fifo", 0666), MakeFifo("ro.fifo", 0444)};
  const int fds = CountOpenFds();
  for (const std::string& fifo : fifos) {
    SCOPED_TRACE(fifo);
    for (const bool need_write : {false, true}) {
      PathOptions options;
      options.need_write = need_write;
      UniqueFd fd;
      bool writable = false;
      EXPECT_ERR(ENXIO, OpenLockFile(fifo, options, &fd, &writable));
      EXPECT_FALSE(fd.valid());
    }
    {
      PathOptions options;
      options.create = false;
      UniqueFd fd;
      bool writable = false;
      EXPECT_ERR(ENXIO, OpenLockFile(fifo, options, &fd, &writable));
    }
    UniqueFd query;
    EXPECT_ERR(ENXIO, OpenQueryFile(fifo, &query));
    EXPECT_FALSE(query.valid());
  }
  EXPECT_EQ(fds, CountOpenFds()) << "a refused FIFO left a descriptor open";
}

TEST_F(LockPathTest, SocketIsRefusedWithEnxio) {
  const std::string socket_path = MakeSocket("listening.sock");
  for (const bool need_write : {false, true}) {
    PathOptions options;
    options.need_write = need_write;
    UniqueFd fd;
    bool writable = false;
    EXPECT_ERR(ENXIO, OpenLockFile(socket_path, options, &fd, &writable));
  }
  UniqueFd query;
  EXPECT_ERR(ENXIO, OpenQueryFile(socket_path, &query));
}

TEST_F(LockPathTest, DirectoryFallsBackToReadOnlyUnlessWriteIsNeeded) {
  UniqueFd fd;
  bool writable = true;
  ASSERT_OK(OpenLockFile(dir_.path(), PathOptions(), &fd, &writable));
  EXPECT_FALSE(writable);
  EXPECT_EQ(O_RDONLY, ::fcntl(fd.get(), F_GETFL) & O_ACCMODE);

  PathOptions options;
  options.need_write = true;
  UniqueFd refused;
  EXPECT_ERR(EISDIR, OpenLockFile(dir_.path(), options, &refused, &writable));
  EXPECT_FALSE(refused.valid());
}

TEST_F(LockPathTest, UnwritableFileFailsWithTheOpenErrorWhenWriteIsNeeded) {
  if (::geteuid() == 0) GTEST_SKIP() << "root may write any file";
  const std::string path = Path("read-only");
  UniqueFd created(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0444));
  ASSERT_TRUE(created.valid());
  UniqueFd fd;
  bool writable = true;
  ASSERT_OK(OpenLockFile(path, PathOptions(), &fd, &writable));
  EXPECT_FALSE(writable);
  PathOptions options;
  options.need_write = true;
  UniqueFd refused;
  EXPECT_ERR(EACCES, OpenLockFile(path, options, &refused, &writable));
}

TEST_F(LockPathTest, QueryFileOpensReadOnlyAndFollowsSymlinks) {
  const std::string path = Path("target");
  UniqueFd created(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  ASSERT_TRUE(created.valid());
  const std::string link = Path("link");
  ASSERT_EQ(0, ::symlink(path.c_str(), link.c_str()));
  UniqueFd fd;
  ASSERT_OK(OpenQueryFile(link, &fd));
  EXPECT_EQ(O_RDONLY, ::fcntl(fd.get(), F_GETFL) & O_ACCMODE);
  EXPECT_EQ(FD_CLOEXEC, ::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  UniqueFd missing;
  EXPECT_ERR(ENOENT, OpenQueryFile(Path("missing"), &missing));
  EXPECT_FALSE(Exists(Path("missing"))) << "a query must create nothing";
}

// A child that holds a read lease on PATH until its pipe closes; with
// keep, it ignores the break (SIGIO), otherwise the break's SIGIO ends it
// and so the lease. Returns its pid once the lease is held, -1 if none could
// be taken; *done is the pipe end whose closing lets the child go.
pid_t LeaseHolder(const std::string& path, bool keep, UniqueFd* done) {
  int ready[2], hold[2];
  if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(hold, O_CLOEXEC) != 0) return -1;
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(hold[1]);  // else our own copy would keep the pipe open
    ::close(ready[0]);
    if (keep) ::signal(SIGIO, SIG_IGN);
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    const char word = fd >= 0 && ::fcntl(fd, F_SETLEASE, F_RDLCK) == 0 ? 'y' : 'n';
    if (::write(ready[1], &word, 1) != 1) ::_exit(1);
    char byte;
    while (::read(hold[0], &byte, 1) < 0 && errno == EINTR) {
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(hold[0]);
  done->reset(hold[1]);
  char word = 'n';
  const bool leased = ::read(ready[0], &word, 1) == 1 && word == 'y';
  ::close(ready[0]);
  if (!leased) {
    done->reset();
    ::waitpid(child, nullptr, 0);
    return -1;
  }
  return child;
}

TEST_F(LockPathTest, LeasedFileIsOpenedWithinTheDeadlineNeverBusyEarly) {
  const std::string path = Path("leased");
  UniqueFd created(::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  ASSERT_TRUE(created.valid());
  created.reset();

  UniqueFd done;
  pid_t holder = LeaseHolder(path, /*keep=*/true, &done);
  if (holder < 0) GTEST_SKIP() << "no lease could be taken here";
  UniqueFd fd;
  bool writable = false;
  // One try: the lease makes the file busy.
  EXPECT_ERR(EWOULDBLOCK, OpenLockFile(path, PathOptions(), &fd, &writable, Deadline::Now()));
  // A holder that keeps its lease: the wait for the break ends at the deadline.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_ERR(ETIMEDOUT, OpenLockFile(path, PathOptions(), &fd, &writable, Deadline::After(0.2)));
  EXPECT_GE(Since(start), 200);
  EXPECT_FALSE(fd.valid());
  done.reset();
  ASSERT_EQ(holder, ::waitpid(holder, nullptr, 0));

  // A holder that lets go on the break: the open succeeds.
  holder = LeaseHolder(path, /*keep=*/false, &done);
  ASSERT_GT(holder, 0);
  EXPECT_OK(OpenLockFile(path, PathOptions(), &fd, &writable, Deadline::After(10)));
  EXPECT_TRUE(fd.valid());
  done.reset();
  ::waitpid(holder, nullptr, 0);
}

}  // namespace
}  // namespace locker
