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

Status RefreshCachedData(int fd, Pos start, Pos end) {
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
  const Pos page = ::sysconf(_SC_PAGESIZE) > 0 ? ::sysconf(_SC_PAGESIZE) : 4096;
  const Pos first = start - start % page;
  Pos length = 0;  // to end of file
  if (end != kRangeEnd && end - first <= kRangeEnd - page) {
    length = end - first + page - 1;
    length -= length % page;
  }
  const int err = ::posix_fadvise(fd, static_cast<off_t>(first), static_cast<off_t>(length),
                                  POSIX_FADV_DONTNEED);
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
