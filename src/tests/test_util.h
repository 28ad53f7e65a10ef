// Helpers shared by the engine's GoogleTest files: errno names in
// assertions, a private temporary directory (and a fixture with a file in
// it), descriptor counts, waits for a blocked flock(2) request, a child
// process that reports the kernel's view of a file's locks, and forked
// children that run a check or release their copy of a lock.
#ifndef FILE_LOCKER_SRC_TESTS_TEST_UTIL_H_
#define FILE_LOCKER_SRC_TESTS_TEST_UTIL_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <utility>

#include "process.h"
#include "unique_fd.h"

namespace locker {

// The symbolic name of an errno value ("EINTR"), "OK" for 0.
std::string ErrName(int err);

// Compare errno values by name, so that failures read "ETIMEDOUT vs OK".
#define EXPECT_ERR(expected, status) \
  EXPECT_EQ(ErrName(expected), ErrName((status).err()))
#define ASSERT_ERR(expected, status) \
  ASSERT_EQ(ErrName(expected), ErrName((status).err()))
#define ASSERT_OK(status) ASSERT_EQ("OK", ErrName((status).err()))
#define EXPECT_OK(status) EXPECT_EQ("OK", ErrName((status).err()))

// Milliseconds elapsed since start.
long long Since(std::chrono::steady_clock::time_point start);

// A private directory under $TMPDIR (or /tmp), removed with its contents.
// path() is empty if it could not be made.
class TempDir final {
 public:
  TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Open descriptors of this process.
int CountOpenFds();

// Whether anything (a dangling symlink too) is at path.
bool Exists(const std::string& path);

// Whether the kernel lists a blocked flock(2) request on inode `ino`.
bool FlockWaiterListed(ino_t ino);

// Waits (up to 10 s) until a thread is blocked in flock(2) on `ino`. Polls the
// kernel's own record of the waiter, so no guess about timing is involved.
bool WaitForFlockWaiter(ino_t ino);

// The same for a blocked fcntl(2) range request (OFD or classic).
bool RangeWaiterListed(ino_t ino);
bool WaitForRangeWaiter(ino_t ino);

// SIGUSR1 deliveries CountUsr1 has seen; tests reset it before use.
extern std::atomic<int> g_usr1_seen;
void CountUsr1(int);

// Reads or writes exactly size bytes, retrying after EINTR; false on EOF
// or error.
bool ReadFully(int fd, void* buffer, size_t size);
bool WriteFully(int fd, const void* buffer, size_t size);

// Runs fn() in a forked child and returns its result (0-255) as the
// child's exit code; -1 when fork failed or the child did not exit
// normally (a crash, a failed assertion that aborted). fn must not return
// into GoogleTest: it runs in the child only, which then _exits.
int RunInChild(const std::function<int()>& fn);

// A child process that reports, from an open file description of its own
// (it keeps none of the parent's descriptors), the lock another process
// would run into: the kernel's view of this process's locks, OFD, classic
// or flock(2). Thread-safe. The file is opened once, when the probe starts:
// a probe does not follow a rename of the path.
class KernelProbe final {
 public:
  explicit KernelProbe(const std::string& path);
  KernelProbe(const KernelProbe&) = delete;
  KernelProbe& operator=(const KernelProbe&) = delete;
  ~KernelProbe();

  bool ok() const { return requests_.valid(); }

  // The lock that `type` (F_RDLCK/F_WRLCK) on [start, start+len) would meet
  // (len 0: to end of file), as F_OFD_GETLK (F_GETLK where there are no OFD
  // locks) reports it: l_type is F_UNLCK when none, -1 on failure.
  struct flock Ask(short type, off_t start, off_t len);

  // Just the type of the lock met: F_UNLCK, F_RDLCK or F_WRLCK.
  short Meets(short type, off_t start, off_t len) {
    return Ask(type, start, len).l_type;
  }

  // Whether flock(2) `op` (LOCK_SH or LOCK_EX) would be granted now. The
  // probe takes the lock for an instant and gives it back at once.
  bool CanFlock(int op);

 private:
  [[noreturn]] static void Serve(const std::string& path, int requests,
                                 int replies);

  pid_t pid_ = -1;
  UniqueFd requests_;
  UniqueFd replies_;
  std::mutex mutex_;
};

// Forks a child that lets its copy of `lock` (a Lock) go and exits with a
// code made of 1: CurrentPid() there is the parent's, 2: the child takes
// itself for the lock's owner, 4: Release left it held. Returns the child's
// pid, or -1 (with errno set) if fork failed.
template <typename Lock>
pid_t ForkChildThatReleases(Lock& lock) {
  const pid_t child = ::fork();
  if (child == 0) {
    int code = 0;
    if (CurrentPid() != ::getpid()) code |= 1;
    if (lock.InOwnerProcess()) code |= 2;
    lock.Release();
    if (!lock.released()) code |= 4;
    ::_exit(code);
  }
  return child;
}

// A fixture with a private directory holding one new file, STEM-XXXXXX,
// whose path is path_ and which fd_ has open for reading and writing.
class TempFileTest : public ::testing::Test {
 protected:
  explicit TempFileTest(std::string stem) : stem_(std::move(stem)) {}

  void SetUp() override;

  // Another open file description of the file: a different handle.
  UniqueFd OpenAgain(int flags = O_RDWR);

  TempDir dir_;
  std::string path_;
  UniqueFd fd_;  // O_RDWR

 private:
  std::string stem_;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_TESTS_TEST_UTIL_H_
