// Whole-file locks with flock(2) semantics.
//
// Stateless functions; safe to call from any thread.
#ifndef FILE_LOCKER_SRC_FLOCK_LOCK_H_
#define FILE_LOCKER_SRC_FLOCK_LOCK_H_

#include <sys/file.h>

#include "deadline.h"
#include "status.h"

namespace locker {

// True for exactly one of LOCK_SH, LOCK_EX, LOCK_UN, optionally | LOCK_NB.
constexpr bool IsValidFlockOperation(int op) {
  const int base = op & ~LOCK_NB;
  return base == LOCK_SH || base == LOCK_EX || base == LOCK_UN;
}

// Applies flock(2) operation `op` to `fd`.
//
// Requires nothing of fd (a bad one fails with EBADF). Blocks only when op is
// LOCK_SH or LOCK_EX without LOCK_NB and the lock is busy, and then no longer
// than `deadline`. Returns Ok, or the errno: EINVAL for an invalid op;
// EWOULDBLOCK for a busy lock with LOCK_NB or an immediate deadline;
// ETIMEDOUT when a positive deadline passed; EINTR when another signal
// interrupted the wait (run handlers, call again with the same deadline);
// EBADF, ENOLCK and the like from the kernel.
Status Flock(int fd, int op, const Deadline& deadline);

}  // namespace locker

#endif  // FILE_LOCKER_SRC_FLOCK_LOCK_H_
