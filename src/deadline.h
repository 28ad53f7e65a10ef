// Deadline: a point on CLOCK_MONOTONIC by which a wait must end, or "never".
//
// Immutable value type; safe to copy between threads. Computing a deadline
// once and passing the same value to every retry of a wait is what makes the
// time spent in signal handlers count against the caller's timeout.
#ifndef FILE_LOCKER_SRC_DEADLINE_H_
#define FILE_LOCKER_SRC_DEADLINE_H_

#include <time.h>

namespace locker {

class Deadline final {
 public:
  // A wait without bound.
  static Deadline Never() { return Deadline(); }
  // A wait of at most `seconds` from now. Requires seconds >= 0 (not NaN);
  // values too large to represent, and +Inf, mean Never().
  static Deadline After(double seconds);
  // A deadline that has already passed: one non-blocking attempt.
  static Deadline Now();

  bool is_never() const { return never_; }
  bool is_immediate() const { return immediate_; }
  // True when the deadline has been reached. Never() is never expired.
  bool Expired() const;
  // The absolute CLOCK_MONOTONIC time. Requires !is_never().
  const timespec& when() const { return when_; }

 private:
  Deadline() = default;

  bool never_ = true;
  bool immediate_ = false;
  timespec when_{};
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_DEADLINE_H_
