#include "process.h"

#include <pthread.h>
#include <unistd.h>

#include <atomic>

namespace locker {

namespace {

std::atomic<pid_t> g_pid{0};

void RefreshPid() { g_pid.store(::getpid(), std::memory_order_relaxed); }

// Registered once, when the library is loaded.
const bool g_registered = [] {
  RefreshPid();
  return ::pthread_atfork(nullptr, nullptr, RefreshPid) == 0;
}();

}  // namespace

pid_t CurrentPid() {
  if (!g_registered) return ::getpid();
  return g_pid.load(std::memory_order_relaxed);
}

}  // namespace locker
