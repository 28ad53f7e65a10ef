// Opening lock files by path, safely in shared directories.
//
// Stateless functions; safe to call from any thread.
#ifndef FILE_LOCKER_SRC_LOCK_PATH_H_
#define FILE_LOCKER_SRC_LOCK_PATH_H_

#include <sys/types.h>

#include <string>

#include "status.h"
#include "unique_fd.h"

namespace locker {

struct PathOptions {
  bool create = true;            // O_CREAT
  mode_t perms = 0666;           // creation mode, before umask
  bool follow_symlinks = false;  // without it, a symlink at PATH is ELOOP
  bool unlink = false;           // remove PATH at release (see Release)
};

// Opens `path` to be locked: O_CLOEXEC | O_NOFOLLOW (unless following
// symlinks) | O_CREAT (if create), never O_TRUNC. Read-write where allowed,
// read-only where not (EACCES, EPERM, EROFS, EISDIR, ETXTBSY), since flock(2)
// needs no write access; directories open read-only. Does not block on
// locks. On success *writable says which mode was used.
Status OpenLockFile(const std::string& path, const PathOptions& options,
                    UniqueFd* fd, bool* writable);

// Whether PATH names dev/ino now (without following a final symlink unless
// follow is true).
bool PathNamesInode(const std::string& path, bool follow, dev_t dev, ino_t ino);

}  // namespace locker

#endif  // FILE_LOCKER_SRC_LOCK_PATH_H_
