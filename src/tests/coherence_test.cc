// Coherence calls (coherent => 1), the path check's link count, and the
// holders probe for filesystems /proc/locks cannot see -- on the local
// filesystem the tests run on, where they must be harmless and exact.

#include "coherence.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "holders.h"
#include "lock_path.h"
#include "range_table.h"
#include "test_util.h"

namespace locker {
namespace {

class CoherenceTest : public TempFileTest {
 protected:
  CoherenceTest() : TempFileTest("coherence") {}
};

// Pages of the file that are in this machine's page cache.
size_t CachedPages(int fd, off_t size) {
  const long page = ::sysconf(_SC_PAGESIZE);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return static_cast<size_t>(-1);
  std::vector<unsigned char> resident((size + page - 1) / page);
  size_t cached = 0;
  if (::mincore(map, size, resident.data()) == 0) {
    for (unsigned char r : resident) cached += r & 1;
  }
  ::munmap(map, size);
  return cached;
}

TEST_F(CoherenceTest, RefreshDropsThePageOfAFewLockedBytes) {
  const long page = ::sysconf(_SC_PAGESIZE);
  const std::string block(page, 'x');  // one page: one small folio
  ASSERT_EQ(static_cast<ssize_t>(block.size()), ::pwrite(fd_.get(), block.data(), block.size(), 0));
  ASSERT_EQ(0, ::fdatasync(fd_.get()));  // clean pages can be dropped
  std::string back(block.size(), '\0');
  ASSERT_EQ(static_cast<ssize_t>(back.size()), ::pread(fd_.get(), &back[0], back.size(), 0));
  if (CachedPages(fd_.get(), block.size()) != 1) GTEST_SKIP() << "no page cache to observe here";

  // The kernel keeps a partial page: advice on 8 bytes alone drops nothing.
  ASSERT_EQ(0, ::posix_fadvise(fd_.get(), 100, 8, POSIX_FADV_DONTNEED));
  ASSERT_EQ(1u, CachedPages(fd_.get(), block.size()));
  // A lock on those 8 bytes must not read them from the cache afterwards.
  ASSERT_OK(RefreshCachedData(fd_.get(), 100, 108));
  EXPECT_EQ(0u, CachedPages(fd_.get(), block.size()));
  // Nor to the end of the file; and the data is still the data.
  ASSERT_EQ(static_cast<ssize_t>(back.size()), ::pread(fd_.get(), &back[0], back.size(), 0));
  ASSERT_OK(RefreshCachedData(fd_.get(), 0, kRangeEnd));
  EXPECT_EQ(0u, CachedPages(fd_.get(), block.size()));
  ASSERT_EQ(static_cast<ssize_t>(back.size()), ::pread(fd_.get(), &back[0], back.size(), 0));
  EXPECT_EQ(block, back);
}

TEST_F(CoherenceTest, FlushWritesBackAndNothingToFlushIsNoError) {
  ASSERT_EQ(5, ::pwrite(fd_.get(), "hello", 5, 0));
  EXPECT_OK(FlushDirtyData(fd_.get()));
  int pipe_fds[2];
  ASSERT_EQ(0, ::pipe2(pipe_fds, O_CLOEXEC));
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  EXPECT_OK(FlushDirtyData(read_end.get()));  // EINVAL: nothing to flush
  EXPECT_OK(RefreshCachedData(read_end.get(), 0, kRangeEnd));  // ESPIPE
  EXPECT_ERR(EBADF, FlushDirtyData(-1));
  EXPECT_ERR(EBADF, RefreshCachedData(-1, 0, kRangeEnd));
}

TEST_F(CoherenceTest, PathNamesOnlyALinkedInode) {
  struct stat st;
  ASSERT_EQ(0, ::fstat(fd_.get(), &st));
  EXPECT_TRUE(PathNamesInode(path_, false, st.st_dev, st.st_ino));
  EXPECT_FALSE(PathNamesInode(path_, false, st.st_dev, st.st_ino + 1));
  ASSERT_EQ(0, ::unlink(path_.c_str()));
  EXPECT_FALSE(PathNamesInode(path_, false, st.st_dev, st.st_ino));
}

TEST_F(CoherenceTest, LocalFilesystemNeedsNoProbe) {
  EXPECT_FALSE(ProcLocksIncomplete(fd_.get()));
  ASSERT_EQ(0, ::flock(fd_.get(), LOCK_EX));
  std::vector<Holder> holders;
  ASSERT_OK(AddProbedHolders(fd_.get(), "", &holders));
  EXPECT_TRUE(holders.empty());  // /proc/locks tells the truth here
  ASSERT_OK(AddProbedHolders(-1, path_, &holders));
  EXPECT_TRUE(holders.empty());
  EXPECT_ERR(ENOENT, AddProbedHolders(-1, path_ + ".missing", &holders));
  ASSERT_EQ(0, ::flock(fd_.get(), LOCK_UN));
}

}  // namespace
}  // namespace locker
