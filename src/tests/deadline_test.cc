// Tests for Deadline: Never, Now and After on CLOCK_MONOTONIC.
//
// After() requires seconds >= 0 and not NaN; negative and NaN arguments are
// outside its contract and are not tested here (the glue rejects them).
#include "deadline.h"

#include <gtest/gtest.h>
#include <time.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>

namespace locker {
namespace {

constexpr int64_t kNanosPerSecond = 1000000000;

int64_t Nanos(const timespec& t) {
  return int64_t{t.tv_sec} * kNanosPerSecond + t.tv_nsec;
}

int64_t MonotonicNanos() {
  timespec now;
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return Nanos(now);
}

TEST(DeadlineTest, Never) {
  const Deadline d = Deadline::Never();
  EXPECT_TRUE(d.is_never());
  EXPECT_FALSE(d.is_immediate());
  EXPECT_FALSE(d.Expired());
}

TEST(DeadlineTest, Now) {
  const int64_t before = MonotonicNanos();
  const Deadline d = Deadline::Now();
  const int64_t after = MonotonicNanos();
  EXPECT_FALSE(d.is_never());
  EXPECT_TRUE(d.is_immediate());
  EXPECT_TRUE(d.Expired());
  EXPECT_LE(before, Nanos(d.when()));
  EXPECT_GE(after, Nanos(d.when()));
}

TEST(DeadlineTest, AfterZeroIsImmediate) {
  for (const double zero : {0.0, -0.0}) {
    const Deadline d = Deadline::After(zero);
    EXPECT_FALSE(d.is_never());
    EXPECT_TRUE(d.is_immediate());
    EXPECT_TRUE(d.Expired());
  }
}

TEST(DeadlineTest, HugeAndInfiniteMeanNever) {
  for (const double seconds :
       {std::numeric_limits<double>::infinity(), 1e12, 1e18, DBL_MAX}) {
    const Deadline d = Deadline::After(seconds);
    EXPECT_TRUE(d.is_never()) << seconds;
    EXPECT_FALSE(d.is_immediate()) << seconds;
    EXPECT_FALSE(d.Expired()) << seconds;
  }
}

TEST(DeadlineTest, AfterIsThatFarAhead) {
  for (const double seconds :
       {1e-9, 0.001, 0.2, 0.5, 0.999999999, 1.0, 1.5, 3600.25, 1e8}) {
    const int64_t before = MonotonicNanos();
    const Deadline d = Deadline::After(seconds);
    const int64_t after = MonotonicNanos();
    SCOPED_TRACE(seconds);
    ASSERT_FALSE(d.is_never());
    EXPECT_FALSE(d.is_immediate());
    EXPECT_GE(d.when().tv_nsec, 0);
    EXPECT_LT(d.when().tv_nsec, kNanosPerSecond);
    const int64_t wait = static_cast<int64_t>(std::ceil(seconds * 1e9));
    // Rounded up to the nanosecond, never early; within what the clock moved
    // during the call (plus a nanosecond of rounding) of the exact value.
    EXPECT_GE(Nanos(d.when()), before + wait - 1);
    EXPECT_LE(Nanos(d.when()), after + wait + 1);
  }
}

TEST(DeadlineTest, TinyPositiveWaitIsNotImmediate) {
  const Deadline d = Deadline::After(1e-300);
  EXPECT_FALSE(d.is_never());
  EXPECT_FALSE(d.is_immediate());
}

TEST(DeadlineTest, ExpiresWhenTheClockReachesIt) {
  const Deadline d = Deadline::After(0.5);
  EXPECT_FALSE(d.Expired());
  // Sleep exactly until the deadline: it must then be expired, not sooner.
  const timespec when = d.when();
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &when, nullptr) !=
         0) {
  }
  EXPECT_TRUE(d.Expired());
  EXPECT_TRUE(d.Expired());  // and stays so
}

TEST(DeadlineTest, CopiesAreEqual) {
  const Deadline d = Deadline::After(10);
  const Deadline copy = d;
  EXPECT_EQ(d.is_never(), copy.is_never());
  EXPECT_EQ(d.is_immediate(), copy.is_immediate());
  EXPECT_EQ(Nanos(d.when()), Nanos(copy.when()));
  EXPECT_FALSE(copy.Expired());
}

}  // namespace
}  // namespace locker
