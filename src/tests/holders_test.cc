// Tests for the /proc/locks reader: ParseLockLine on holder and waiter
// lines, and ListHolders / ListWaiters against a lock this process holds
// and a request one of its threads has blocked in the kernel.
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <future>
#include <string>
#include <vector>

#include "holders.h"
#include "test_util.h"
#include "unique_fd.h"

namespace locker {
namespace {

TEST(ParseLockLineTest, HolderLine) {
  LockLine line;
  ASSERT_TRUE(ParseLockLine("3: FLOCK  ADVISORY  WRITE 22172 fe:00:10954447 0 EOF", &line));
  EXPECT_FALSE(line.waiting);
  EXPECT_EQ("flock", line.kind);
  EXPECT_EQ(LOCK_EX, line.mode);
  EXPECT_EQ(22172, line.pid);
  EXPECT_EQ(0xfeu, line.dev_major);
  EXPECT_EQ(10954447ull, line.ino);
  EXPECT_EQ(0, line.length);
}

TEST(ParseLockLineTest, WaiterLines) {
  LockLine line;
  ASSERT_TRUE(ParseLockLine("3: -> FLOCK  ADVISORY  READ 22142 fe:00:10954447 0 EOF", &line));
  EXPECT_TRUE(line.waiting);
  EXPECT_EQ("flock", line.kind);
  EXPECT_EQ(LOCK_SH, line.mode);
  EXPECT_EQ(22142, line.pid);
  // Newer kernels indent the waiters of a waiter.
  ASSERT_TRUE(ParseLockLine(" 7: -> OFDLCK ADVISORY  WRITE -1 08:01:42 10 19", &line));
  EXPECT_TRUE(line.waiting);
  EXPECT_EQ("ofd", line.kind);
  EXPECT_EQ(-1, line.pid);
  EXPECT_EQ(10, line.start);
  EXPECT_EQ(10, line.length);
}

class HoldersTest : public TempFileTest {
 protected:
  HoldersTest() : TempFileTest("holders") {}
};

TEST_F(HoldersTest, ListWaitersNamesTheBlockedThreadsProcess) {
  struct stat st;
  ASSERT_EQ(0, ::fstat(fd_.get(), &st));
  ASSERT_EQ(0, ::flock(fd_.get(), LOCK_EX));

  std::vector<Holder> waiters;
  ASSERT_OK(ListWaiters(st.st_dev, st.st_ino, &waiters));
  EXPECT_TRUE(waiters.empty()) << "nobody waits yet";

  UniqueFd other = OpenAgain();
  ASSERT_TRUE(other.valid());
  auto blocked = std::async(std::launch::async, [&] { return ::flock(other.get(), LOCK_SH); });
  ASSERT_TRUE(WaitForFlockWaiter(st.st_ino));

  ASSERT_OK(ListWaiters(st.st_dev, st.st_ino, &waiters));  // appends
  ASSERT_EQ(1u, waiters.size());
  EXPECT_TRUE(waiters[0].waiting);
  EXPECT_EQ(::getpid(), waiters[0].pid);
  EXPECT_EQ("flock", waiters[0].kind);
  EXPECT_EQ(LOCK_SH, waiters[0].mode);
  EXPECT_FALSE(waiters[0].command.empty());

  std::vector<Holder> holders;
  ASSERT_OK(ListHolders(st.st_dev, st.st_ino, &holders));
  ASSERT_EQ(1u, holders.size()) << "the holder, not the waiter";
  EXPECT_FALSE(holders[0].waiting);
  EXPECT_EQ(LOCK_EX, holders[0].mode);

  ASSERT_EQ(0, ::flock(fd_.get(), LOCK_UN));
  EXPECT_EQ(0, blocked.get());
  waiters.clear();
  ASSERT_OK(ListWaiters(st.st_dev, st.st_ino, &waiters));
  EXPECT_TRUE(waiters.empty()) << "the request was granted";
}

}  // namespace
}  // namespace locker
