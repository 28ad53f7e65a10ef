// Tests for the table of descriptors kept open so that closing them cannot
// drop this process's classic locks (kept_files.h). With OFD locks nothing
// is ever kept; the classic run (FILE_LOCKER_NO_OFD=1) checks the rules.
#include "kept_files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "deadline.h"
#include "lock.h"
#include "test_util.h"
#include "unique_fd.h"

namespace locker {
namespace {

class KeptFilesTest : public TempFileTest {
 protected:
  KeptFilesTest() : TempFileTest("kept") {}

  int owner_ = 0;  // only its address matters
  int token_ = 0;
};

TEST_F(KeptFilesTest, KeptWhileClassicLocksLiveThenClosable) {
  Lock first, second;
  ASSERT_OK(first.AcquirePath(path_, LOCK_SH, 0, 10, PathOptions(), Deadline::Never()));
  ASSERT_OK(second.AcquirePath(path_, LOCK_SH, 0, 10, PathOptions(), Deadline::Never()));
  UniqueFd dup(::fcntl(first.fd(), F_DUPFD_CLOEXEC, 0));
  ASSERT_TRUE(dup.get() >= 0);

  const InodeKey file = FileToWatch(first);
  first.Release();
  if (UsingOfdLocks()) {
    EXPECT_FALSE(KeepIfLocked(&owner_, &token_, dup.get(), file));
    return;
  }
  ASSERT_TRUE(KeepIfLocked(&owner_, &token_, dup.get(), file));
  EXPECT_EQ(nullptr, TakeClosable(&owner_)) << "the second lock still lives";
  EXPECT_EQ(nullptr, TakeKept(&token_, dup.get())) << "another owner's";
  EXPECT_EQ(&token_, TakeKept(&owner_, dup.get())) << "its own description";
  EXPECT_EQ(nullptr, TakeKept(&owner_, dup.get())) << "handed back once";

  ASSERT_TRUE(KeepIfLocked(&owner_, &token_, -1, file));
  EXPECT_EQ(nullptr, TakeKept(&owner_, dup.get())) << "fd -1 is never reused";
  second.Release();
  EXPECT_EQ(&token_, TakeClosable(&owner_));
  EXPECT_EQ(nullptr, TakeClosable(&owner_));
  EXPECT_FALSE(KeepIfLocked(&owner_, &token_, dup.get(), file)) << "no locks left";
}

TEST_F(KeptFilesTest, KeptWhileALockOnOtherBytesLives) {
  Lock first, second;
  ASSERT_OK(first.AcquirePath(path_, LOCK_SH, 0, 10, PathOptions(), Deadline::Never()));
  ASSERT_OK(second.AcquirePath(path_, LOCK_SH, 100, 110, PathOptions(), Deadline::Never()));
  const InodeKey file = FileToWatch(first);
  first.Release();
  if (UsingOfdLocks()) return;
  ASSERT_TRUE(KeepIfLocked(&owner_, &token_, -1, file)) << "[100, 110) is still locked";
  EXPECT_EQ(nullptr, TakeClosable(&owner_));
  second.Release();
  EXPECT_EQ(&token_, TakeClosable(&owner_));
}

TEST_F(KeptFilesTest, AnEmptyOrBackwardRangeIsRefused) {
  Lock lock;
  EXPECT_ERR(EINVAL, lock.AcquirePath(path_, LOCK_SH, 100, 10, PathOptions(), Deadline::Never()));
  EXPECT_ERR(EINVAL, lock.AcquirePath(path_, LOCK_SH, 10, 10, PathOptions(), Deadline::Never()));
  EXPECT_ERR(EINVAL, lock.AcquireDescriptor(fd_.get(), LOCK_SH, 100, 10, Deadline::Never()));
}

}  // namespace
}  // namespace locker
