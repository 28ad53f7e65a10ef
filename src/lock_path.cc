#include "lock_path.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <utility>

#include "wait_timer.h"

namespace locker {

namespace {

bool IsReadOnlyFallbackError(int err) {
  return err == EACCES || err == EPERM || err == EROFS || err == EISDIR ||
         err == ETXTBSY;
}

// Opens PATH, retrying the two answers a network filesystem client can give
// while another machine removes and recreates the file: EEXIST from O_CREAT
// without O_EXCL (its cached lookup said "absent", the server says "exists";
// impossible on a local filesystem) and ESTALE (it still named the removed
// file, and the kernel's own retry met the race again). Opening again then
// finds the file PATH names now. Bounded, in case a filesystem keeps
// answering so.
int OpenRetryingRaces(const std::string& path, int flags, mode_t perms) {
  constexpr int kAttempts = 100;
  int fd = -1;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    fd = ::open(path.c_str(), flags, perms);
    if (fd >= 0) break;
    if (errno != ESTALE && !(errno == EEXIST && (flags & O_CREAT))) break;
  }
  return fd;
}

// A FIFO or a socket is no lock file: refused with one errno. (Opening a
// socket already fails with ENXIO; a FIFO opens, without blocking, and is
// refused here.)
Status RefuseNonFiles(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::Error(errno);
  if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return Status::Error(kNotALockFileErrno);
  return Status::Ok();
}

bool IsRegularFile(const std::string& path, bool follow) {
  struct stat st;
  const int rc = follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st);
  return rc == 0 && S_ISREG(st.st_mode);
}

// open(2) with flags, which hold O_NONBLOCK. A regular file under another
// process's lease fails with EWOULDBLOCK (the kernel has begun breaking the
// lease); it is opened again, blocking, which waits for the break, within
// deadline. Anything else is not retried, so nothing else can block.
Status OpenWithin(const std::string& path, int flags, mode_t perms, bool follow,
                  const Deadline& deadline, int* out) {
  *out = OpenRetryingRaces(path, flags, perms);
  if (*out >= 0) return Status::Ok();
  const int err = BusyAsEwouldblock(errno);
  if (err != EWOULDBLOCK || !IsRegularFile(path, follow)) return Status::Error(err);
  if (deadline.is_immediate()) return Status::Error(EWOULDBLOCK);
  return LockBefore(deadline, [&](bool blocking) {
    *out = ::open(path.c_str(), blocking ? flags & ~O_NONBLOCK : flags, perms);
    return *out >= 0 ? Status::Ok() : Status::Error(BusyAsEwouldblock(errno));
  });
}

}  // namespace

bool PathNamesInode(const std::string& path, bool follow, dev_t dev, ino_t ino) {
  // A network filesystem client answers a plain stat from its cache, which
  // may still show the file another machine has just removed. Forcing the
  // attributes from the server gives the inode's current link count: a
  // removed file that we (or anyone) still hold open has none left.
  struct statx stx;
  const int flags = AT_STATX_FORCE_SYNC | (follow ? 0 : AT_SYMLINK_NOFOLLOW);
  if (::statx(AT_FDCWD, path.c_str(), flags, STATX_INO | STATX_NLINK, &stx) != 0) {
    return false;
  }
  return makedev(stx.stx_dev_major, stx.stx_dev_minor) == dev && stx.stx_ino == ino &&
         stx.stx_nlink > 0;
}

Status OpenLockFile(const std::string& path, const PathOptions& options,
                    UniqueFd* fd, bool* writable, const Deadline& deadline) {
  // O_NONBLOCK: opening a FIFO (even read-only, as the fallback does) or a
  // device must not wait for a peer; it is cleared below.
  int flags = O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  if (!options.follow_symlinks) flags |= O_NOFOLLOW;
  if (options.create) flags |= O_CREAT;
  const bool follow = options.follow_symlinks;
  int raw;
  Status status = OpenWithin(path, flags | O_RDWR, options.perms, follow, deadline, &raw);
  *writable = status.ok();
  if (!status.ok() && !options.need_write && IsReadOnlyFallbackError(status.err())) {
    // Another user's lock file, a read-only mount or a directory: flock(2)
    // works on a read-only descriptor. Linux refuses O_CREAT on an existing
    // directory, so a directory is opened without it.
    if (status.err() == EISDIR) flags &= ~O_CREAT;
    status = OpenWithin(path, flags | O_RDONLY, options.perms, follow, deadline, &raw);
  }
  if (!status.ok()) {
    const int err = status.err();
    // With need_write a read-only FIFO fails read-write without a look at
    // what it is; it is still a FIFO, refused like any other.
    struct stat st;
    if (options.need_write &&
        (options.follow_symlinks ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) == 0 &&
        (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
      return Status::Error(kNotALockFileErrno);
    }
    return Status::Error(err);
  }
  UniqueFd opened(raw);
  status = RefuseNonFiles(opened.get());
  if (!status.ok()) return status;
  // The guard's fh() shares this open file description: leave it blocking,
  // as a handle the caller opened would be. (F_SETFL ignores access modes.)
  if (::fcntl(opened.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) return Status::Error(errno);
  *fd = std::move(opened);
  return Status::Ok();
}

Status OpenQueryFile(const std::string& path, UniqueFd* fd) {
  UniqueFd opened(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!opened.valid()) return Status::Error(errno);
  const Status status = RefuseNonFiles(opened.get());
  if (status.ok()) *fd = std::move(opened);
  return status;
}

}  // namespace locker
