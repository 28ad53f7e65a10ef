// Opening lock files by path, safely in shared directories.
//
// Stateless functions; safe to call from any thread.
#ifndef FILE_LOCKER_SRC_LOCK_PATH_H_
#define FILE_LOCKER_SRC_LOCK_PATH_H_

#include <errno.h>
#include <sys/types.h>

#include <string>

#include "deadline.h"
#include "status.h"
#include "unique_fd.h"

namespace locker {

// What OpenLockFile and OpenQueryFile answer for a FIFO or a socket at PATH:
// neither can hold a lock file's place, and opening a FIFO could block.
constexpr int kNotALockFileErrno = ENXIO;

struct PathOptions {
  bool create = true;            // O_CREAT
  mode_t perms = 0666;           // creation mode, before umask
  bool follow_symlinks = false;  // without it, a symlink at PATH is ELOOP
  bool unlink = false;           // remove PATH at release (see Release)
  // The lock needs a descriptor open for writing (an exclusive range lock):
  // no read-only fallback, so a file the caller cannot write fails with the
  // read-write open's errno (EACCES, EROFS, EISDIR, ...).
  bool need_write = false;
};

// Opens `path` to be locked: O_CLOEXEC | O_NOFOLLOW (unless following
// symlinks) | O_CREAT (if create), never O_TRUNC. Read-write where allowed,
// read-only where not (EACCES, EPERM, EROFS, EISDIR, ETXTBSY) unless
// options.need_write, since flock(2) needs no write access; directories open
// read-only.
//
// Never waits for a peer, whatever PATH names: both opens use O_NONBLOCK,
// which is cleared again on the descriptor returned. A FIFO or a socket at
// PATH fails with kNotALockFileErrno (ENXIO) and nothing is left open. Does
// not block on locks. On success *writable says which mode was used.
//
// The one wait: a regular file on which another process holds a lease (an
// NFS delegation, a Samba oplock) cannot be opened until the lease is
// broken, and O_NONBLOCK makes that EWOULDBLOCK. Such an open is retried,
// blocking, within deadline as LockBefore bounds a lock (EWOULDBLOCK for an
// immediate deadline, ETIMEDOUT, EINTR: call again; without a deadline the
// kernel's lease-break-time bounds it), so no caller hears "busy" early.
Status OpenLockFile(const std::string& path, const PathOptions& options,
                    UniqueFd* fd, bool* writable,
                    const Deadline& deadline = Deadline::Never());

// Opens `path` read-only to ask the kernel about its locks (F_GETLK and the
// like), following symlinks, creating nothing. Never blocks; a FIFO or a
// socket fails with kNotALockFileErrno. The descriptor keeps O_NONBLOCK
// (locks ignore it); it is O_CLOEXEC.
Status OpenQueryFile(const std::string& path, UniqueFd* fd);

// Whether PATH names dev/ino now (without following a final symlink unless
// follow is true).
bool PathNamesInode(const std::string& path, bool follow, dev_t dev, ino_t ino);

}  // namespace locker

#endif  // FILE_LOCKER_SRC_LOCK_PATH_H_
