#include "flock_lock.h"

#include <errno.h>

#include "wait_timer.h"

namespace locker {

Status Flock(int fd, int op, const Deadline& deadline) {
  if (!IsValidFlockOperation(op)) return Status::Error(EINVAL);
  if ((op & LOCK_NB) != 0 || op == LOCK_UN) {
    return ::flock(fd, op) == 0 ? Status::Ok() : Status::Error(errno);
  }
  return LockBefore(deadline, [fd, op](bool blocking) {
    if (::flock(fd, blocking ? op : op | LOCK_NB) == 0) return Status::Ok();
    return Status::Error(BusyAsEwouldblock(errno));
  });
}

}  // namespace locker
