// Who holds locks on a file right now, read from /proc (Linux).
//
// Diagnostics only: the answer can be stale by the time it is read.
// Stateless; safe to call from any thread.
#ifndef FILE_LOCKER_SRC_HOLDERS_H_
#define FILE_LOCKER_SRC_HOLDERS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "status.h"

namespace locker {

struct Holder {
  pid_t pid = -1;        // -1: a holder /proc does not let us see
  std::string kind;      // "flock", "posix" or "ofd"
  int mode = 0;          // LOCK_SH or LOCK_EX
  off_t start = 0;
  off_t length = 0;      // 0: to end of file
  std::string command;   // the holder's command line, "" if unreadable
  bool waiting = false;  // blocked waiting for this lock, not holding it
};

// One parsed line of /proc/locks (or a "lock:" line of /proc/PID/fdinfo).
struct LockLine {
  std::string kind;  // as Holder::kind; empty for kinds we do not report
  bool waiting = false;
  int mode = 0;
  pid_t pid = -1;
  unsigned dev_major = 0, dev_minor = 0;
  unsigned long long ino = 0;
  off_t start = 0;
  off_t length = 0;
};

// Parses one line; false if it is not a lock line.
bool ParseLockLine(const std::string& line, LockLine* out);

// Lists the locks held on the file with device dev and inode ino: classic
// POSIX locks with the pid /proc/locks gives; flock and OFD locks (which
// /proc/locks reports with the pid of their taker, or -1) with every process
// whose /proc/PID/fdinfo shows the lock on one of its descriptors. Locks
// whose holder cannot be seen (permissions, other pid namespaces) come back
// with pid -1 rather than a guess. Fails only if /proc/locks is unreadable.
Status ListHolders(dev_t dev, ino_t ino, std::vector<Holder>* out);

// Appends to *out the lock requests blocked on the file with device dev and
// inode ino (the "->" lines of /proc/locks), each with waiting set: the pid
// the kernel gives (the waiting process for flock and classic POSIX
// requests; -1 for OFD requests, whose waiter /proc does not name) and its
// command line. Never blocks. Fails only if /proc/locks is unreadable.
Status ListWaiters(dev_t dev, ino_t ino, std::vector<Holder>* out);

}  // namespace locker

#endif  // FILE_LOCKER_SRC_HOLDERS_H_
