#include "lock_path.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace locker {

namespace {

bool IsReadOnlyFallbackError(int err) {
  return err == EACCES || err == EPERM || err == EROFS || err == EISDIR ||
         err == ETXTBSY;
}

}  // namespace

bool PathNamesInode(const std::string& path, bool follow, dev_t dev, ino_t ino) {
  struct stat st;
  const int rc = follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st);
  return rc == 0 && st.st_dev == dev && st.st_ino == ino;
}

Status OpenLockFile(const std::string& path, const PathOptions& options,
                    UniqueFd* fd, bool* writable) {
  int flags = O_CLOEXEC | O_NOCTTY;
  if (!options.follow_symlinks) flags |= O_NOFOLLOW;
  if (options.create) flags |= O_CREAT;
  int raw = ::open(path.c_str(), flags | O_RDWR, options.perms);
  *writable = raw >= 0;
  if (raw < 0 && IsReadOnlyFallbackError(errno)) {
    // Another user's lock file, a read-only mount or a directory: flock(2)
    // works on a read-only descriptor. Linux refuses O_CREAT on an existing
    // directory, so a directory is opened without it.
    if (errno == EISDIR) flags &= ~O_CREAT;
    raw = ::open(path.c_str(), flags | O_RDONLY, options.perms);
  }
  if (raw < 0) return Status::Error(errno);
  fd->reset(raw);
  return Status::Ok();
}

}  // namespace locker
