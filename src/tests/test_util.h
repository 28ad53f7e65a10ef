// Helpers shared by the engine's GoogleTest files: errno names in
// assertions, a private temporary directory (and a fixture with a file in
// it), descriptor counts, waits for a blocked flock(2) request, and a forked
// child that releases its copy of a lock.
#ifndef FILE_LOCKER_SRC_TESTS_TEST_UTIL_H_
#define FILE_LOCKER_SRC_TESTS_TEST_UTIL_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
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

// SIGUSR1 deliveries CountUsr1 has seen; tests reset it before use.
extern std::atomic<int> g_usr1_seen;
void CountUsr1(int);

// Forks a child that lets its copy of `lock` (a FileLock or a RangeLock) go
// and exits with a code made of 1: CurrentPid() there is the parent's, 2: the
// child takes itself for the lock's owner, 4: Release left it held. Returns
// the child's pid, or -1 (with errno set) if fork failed.
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
