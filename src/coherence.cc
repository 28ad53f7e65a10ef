#include "coherence.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "range_table.h"

namespace locker {

namespace {

bool NothingToDo(int err) { return err == ESPIPE || err == EINVAL || err == EROFS; }

}  // namespace

Status RefreshCachedData(int fd, off_t start, off_t end) {
  struct statx stx;
  // The forced lookup also lets the FUSE client notice a changed size or
  // mtime and invalidate the pages itself; the fadvise below covers clients
  // that do not (unchanged size, coarse mtime).
  if (::statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_SIZE | STATX_MTIME,
              &stx) != 0) {
    const int err = errno;
    if (!NothingToDo(err)) return Status::Error(err);
  }
  // The kernel keeps partial pages at either end of the advice, so widen
  // the range to whole pages: the neighbours' pages are clean, and dropping
  // them costs only a re-read.
  const off_t page = ::sysconf(_SC_PAGESIZE) > 0 ? ::sysconf(_SC_PAGESIZE) : 4096;
  const off_t first = start - start % page;
  off_t length = 0;  // to end of file
  if (end != kRangeEnd && end - first <= kRangeEnd - page) {
    length = end - first + page - 1;
    length -= length % page;
  }
  const int err = ::posix_fadvise(fd, first, length, POSIX_FADV_DONTNEED);
  if (err != 0 && !NothingToDo(err)) return Status::Error(err);
  return Status::Ok();
}

Status FlushDirtyData(int fd) {
  int rc;
  do {
    rc = ::fdatasync(fd);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    if (!NothingToDo(err)) return Status::Error(err);
  }
  return Status::Ok();
}

}  // namespace locker
