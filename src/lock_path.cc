#include "lock_path.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

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
                    UniqueFd* fd, bool* writable) {
  int flags = O_CLOEXEC | O_NOCTTY;
  if (!options.follow_symlinks) flags |= O_NOFOLLOW;
  if (options.create) flags |= O_CREAT;
  int raw = OpenRetryingRaces(path, flags | O_RDWR, options.perms);
  *writable = raw >= 0;
  if (raw < 0 && IsReadOnlyFallbackError(errno)) {
    // Another user's lock file, a read-only mount or a directory: flock(2)
    // works on a read-only descriptor. Linux refuses O_CREAT on an existing
    // directory, so a directory is opened without it.
    if (errno == EISDIR) flags &= ~O_CREAT;
    raw = OpenRetryingRaces(path, flags | O_RDONLY, options.perms);
  }
  if (raw < 0) return Status::Error(errno);
  fd->reset(raw);
  return Status::Ok();
}

}  // namespace locker
