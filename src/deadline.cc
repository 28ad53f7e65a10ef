#include "deadline.h"

#include <cmath>

namespace locker {

namespace {

constexpr long kNanosPerSecond = 1000000000L;
// Beyond this many seconds (about 31 years) a wait is treated as unbounded,
// which also keeps tv_sec far from overflow.
constexpr double kLongestWait = 1e9;

timespec MonotonicNow() {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return now;
}

}  // namespace

Deadline Deadline::After(double seconds) {
  if (!(seconds < kLongestWait)) return Never();  // also +Inf
  if (seconds <= 0) return Now();
  Deadline d;
  d.never_ = false;
  d.when_ = MonotonicNow();
  double whole;
  const double frac = std::modf(seconds, &whole);
  d.when_.tv_sec += static_cast<time_t>(whole);
  d.when_.tv_nsec += static_cast<long>(std::ceil(frac * kNanosPerSecond));
  if (d.when_.tv_nsec >= kNanosPerSecond) {
    d.when_.tv_sec += 1;
    d.when_.tv_nsec -= kNanosPerSecond;
  }
  return d;
}

Deadline Deadline::Now() {
  Deadline d;
  d.never_ = false;
  d.immediate_ = true;
  d.when_ = MonotonicNow();
  return d;
}

bool Deadline::Expired() const {
  if (never_) return false;
  if (immediate_) return true;
  const timespec now = MonotonicNow();
  return now.tv_sec > when_.tv_sec ||
         (now.tv_sec == when_.tv_sec && now.tv_nsec >= when_.tv_nsec);
}

}  // namespace locker
