#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <system_error>
#include <thread>
#include <utility>

namespace locker {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::string ErrName(int err) {
  if (err == 0) return "OK";
  const char* name = ::strerrorname_np(err);
  return name ? name : "errno " + std::to_string(err);
}

long long Since(steady_clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - start)
      .count();
}

TempDir::TempDir() {
  const char* base = ::getenv("TMPDIR");
  std::string name =
      std::string(base && *base ? base : "/tmp") + "/locker-test-XXXXXX";
  if (::mkdtemp(name.data()) != nullptr) path_ = name;
}

TempDir::~TempDir() {
  std::error_code ignored;
  if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
}

int CountOpenFds() {
  int count = 0;
  std::error_code error;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", error);
       !error && it != std::filesystem::directory_iterator();
       it.increment(error)) {
    ++count;
  }
  return count;
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

bool FlockWaiterListed(ino_t ino) {
  std::ifstream locks("/proc/locks");
  const std::string inode = ":" + std::to_string(ino) + " ";
  std::string line;
  while (std::getline(locks, line)) {
    if (line.find("-> FLOCK") != std::string::npos &&
        line.find(inode) != std::string::npos) {
      return true;
    }
  }
  return false;
}

bool WaitForFlockWaiter(ino_t ino) {
  const auto give_up = steady_clock::now() + std::chrono::seconds(10);
  while (!FlockWaiterListed(ino)) {
    if (steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

std::atomic<int> g_usr1_seen{0};
void CountUsr1(int) { ++g_usr1_seen; }

void TempFileTest::SetUp() {
  ASSERT_FALSE(dir_.path().empty()) << "mkdtemp: " << strerror(errno);
  std::string name = dir_.path() + "/" + stem_ + "-XXXXXX";
  const int fd = ::mkostemp(name.data(), O_CLOEXEC);
  ASSERT_GE(fd, 0) << "mkostemp: " << strerror(errno);
  path_ = name;
  fd_.reset(fd);
}

UniqueFd TempFileTest::OpenAgain(int flags) {
  UniqueFd fd(::open(path_.c_str(), flags | O_CLOEXEC));
  EXPECT_TRUE(fd.valid()) << path_ << ": " << strerror(errno);
  return fd;
}

}  // namespace locker
