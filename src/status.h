// Status: the result of an engine call, either success or an errno value.
//
// Engine calls never throw and never leave errno as their only report: every
// failure comes back as a Status built by Status::Error(err), where err is the
// errno value copied at the point of failure, before any cleanup call could
// overwrite it. Immutable value type; safe to copy between threads.
#ifndef FILE_LOCKER_SRC_STATUS_H_
#define FILE_LOCKER_SRC_STATUS_H_

#include <errno.h>

namespace locker {

class Status final {
 public:
  static constexpr Status Ok() { return Status(0); }
  // Requires err != 0 (an errno value).
  static constexpr Status Error(int err) { return Status(err); }
  // Ok for 0, else Error(err): for calls that answer 0 or an errno value.
  static constexpr Status FromErrno(int err) { return Status(err); }

  constexpr bool ok() const { return err_ == 0; }
  // The errno value, 0 for success.
  constexpr int err() const { return err_; }

 private:
  constexpr explicit Status(int err) : err_(err) {}
  int err_;
};

// The errno of a call that found a lock (or a lease) busy, said one way:
// EWOULDBLOCK. Linux makes EAGAIN the same value; other systems need not.
constexpr int BusyAsEwouldblock(int err) { return err == EAGAIN ? EWOULDBLOCK : err; }

}  // namespace locker

#endif  // FILE_LOCKER_SRC_STATUS_H_
