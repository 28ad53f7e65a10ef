// Who holds locks on a file right now, read from /proc (Linux).
//
// Diagnostics only: the answer can be stale by the time it is read.
// Stateless; safe to call from any thread.
#ifndef FILE_LOCKER_SRC_HOLDERS_H_
#define FILE_LOCKER_SRC_HOLDERS_H_

#include <sys/types.h>

#include <functional>
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
  bool remote = false;   // found by probing, not in /proc/locks (see below)
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

// Calls fn with each lock line of text -- /proc/locks, or with prefix
// "lock:" the lock lines of a /proc/PID/fdinfo -- waiters included, lines
// of kinds Holder does not report left out.
void ForEachLockLine(const std::string& text, const std::string& prefix,
                     const std::function<void(const LockLine&)>& fn);

// What ListHolders and ListWaiters read from /proc, behind one interface so
// that recorded text can stand in for a live system (the engine's tests feed
// it samples). LiveProc() reads the real files; it is stateless and safe to
// share between threads.
class ProcSource {
 public:
  virtual ~ProcSource() = default;
  // Sets *text to the whole of /proc/locks; returns 0, or the errno value
  // that kept it from being read.
  virtual int ReadLocks(std::string* text) const = 0;
  // Calls visit(pid, text) with the text of each /proc/PID/fdinfo/FD it can
  // read, for every process it can see.
  virtual void ForEachFdinfo(
      const std::function<void(pid_t, const std::string&)>& visit) const = 0;
  // The raw bytes of /proc/PID/cmdline; "" when unreadable.
  virtual std::string Cmdline(pid_t pid) const = 0;
};
const ProcSource& LiveProc();

// A command line as Holder::command gives it: the bytes of
// /proc/PID/cmdline with trailing NULs dropped and the NULs between
// arguments turned into spaces. Every other byte (spaces inside an argument,
// newlines, control characters, bytes that are not UTF-8) is kept as is.
std::string CommandFromCmdline(std::string raw);

// Lists the locks held on the file with device dev and inode ino: classic
// POSIX locks with the pid /proc/locks gives; flock and OFD locks (which
// /proc/locks reports with the pid of their taker, or -1) with every process
// whose /proc/PID/fdinfo shows the lock on one of its descriptors. Locks
// whose holder cannot be seen (permissions, other pid namespaces) come back
// with pid -1 rather than a guess. Fails only if /proc/locks is unreadable.
Status ListHolders(dev_t dev, ino_t ino, std::vector<Holder>* out);
// The same, reading what proc gives instead of /proc.
Status ListHolders(const ProcSource& proc, dev_t dev, ino_t ino, std::vector<Holder>* out);

// Appends to *out the lock requests blocked on the file with device dev and
// inode ino (the "->" lines of /proc/locks), each with waiting set: the pid
// the kernel gives (the waiting process for flock and classic POSIX
// requests; -1 for OFD requests, whose waiter /proc does not name) and its
// command line. Never blocks. Fails only if /proc/locks is unreadable.
Status ListWaiters(dev_t dev, ino_t ino, std::vector<Holder>* out);
// The same, reading what proc gives instead of /proc.
Status ListWaiters(const ProcSource& proc, dev_t dev, ino_t ino, std::vector<Holder>* out);

// Whether the filesystem holding fd keeps (some of) its locks where
// /proc/locks cannot show them: network and cluster filesystems whose locks
// live on a server (NFS, CephFS, SMB, Lustre, 9P, AFS, OCFS2, GFS2) and FUSE
// filesystems (GlusterFS, ceph-fuse, ...), whose locks /proc/locks does not
// list even for this machine's own holders. Decided by fstatfs; false if
// fstatfs fails.
bool ProcLocksIncomplete(int fd);

// On such a filesystem, asks the filesystem itself who holds locks on the
// file, and appends what it answers to *out as Holders with remote = true,
// skipping locks already in *out (what /proc/locks showed). fd is any
// descriptor of the file, or -1 to open path (read-only, non-blocking). Does
// nothing elsewhere. Never blocks on a lock.
//
// The probe runs on a new open file description of the file: F_OFD_GETLK
// (F_GETLK where the kernel lacks it) walks the locked ranges, with the pid
// from F_GETLK where the filesystem reports one -- on a network filesystem
// possibly another machine's pid, so no command is looked up. Only if no
// range is locked, a non-blocking flock(2) try (exclusive, then shared) finds
// a whole-file flock holder; that try holds the lock for an instant, so a
// third process's LOCK_NB request at that moment can fail. Where the
// filesystem emulates flock with POSIX locks (NFS, GlusterFS), a flock holder
// appears as a whole-file "posix" entry. Fails only if the file cannot be
// opened for the probe and *out is empty (which would read "nobody").
Status AddProbedHolders(int fd, const std::string& path, std::vector<Holder>* out);

}  // namespace locker

#endif  // FILE_LOCKER_SRC_HOLDERS_H_
