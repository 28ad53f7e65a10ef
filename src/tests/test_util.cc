#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
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

namespace {

// Whether /proc/locks lists a blocked request of one of the kinds on ino.
bool WaiterListed(ino_t ino, std::initializer_list<const char*> kinds) {
  std::ifstream locks("/proc/locks");
  const std::string inode = ":" + std::to_string(ino) + " ";
  std::string line;
  while (std::getline(locks, line)) {
    if (line.find(inode) == std::string::npos) continue;
    for (const char* kind : kinds) {
      if (line.find(std::string("-> ") + kind) != std::string::npos) return true;
    }
  }
  return false;
}

template <typename Listed>
bool WaitUntilListed(Listed&& listed) {
  const auto give_up = steady_clock::now() + std::chrono::seconds(10);
  while (!listed()) {
    if (steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

}  // namespace

bool FlockWaiterListed(ino_t ino) { return WaiterListed(ino, {"FLOCK"}); }

bool WaitForFlockWaiter(ino_t ino) {
  return WaitUntilListed([ino] { return FlockWaiterListed(ino); });
}

bool RangeWaiterListed(ino_t ino) {
  return WaiterListed(ino, {"OFDLCK", "POSIX"});
}

bool WaitForRangeWaiter(ino_t ino) {
  return WaitUntilListed([ino] { return RangeWaiterListed(ino); });
}

bool ReadFully(int fd, void* buffer, size_t size) {
  char* p = static_cast<char*>(buffer);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool WriteFully(int fd, const void* buffer, size_t size) {
  const char* p = static_cast<const char*>(buffer);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

int RunInChild(const std::function<int()>& fn) {
  const pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) ::_exit(fn() & 0xff);
  int wstatus = 0;
  pid_t got;
  do {
    got = ::waitpid(child, &wstatus, 0);
  } while (got < 0 && errno == EINTR);
  if (got != child || !WIFEXITED(wstatus)) return -1;
  return WEXITSTATUS(wstatus);
}

namespace {

// A request to KernelProbe's child: l_whence kFlockQuery asks flock(2) with
// the operation in l_type; anything else is an F_OFD_GETLK / F_GETLK query.
constexpr short kFlockQuery = -1;

}  // namespace

KernelProbe::KernelProbe(const std::string& path) {
  int requests[2], replies[2];
  if (::pipe2(requests, O_CLOEXEC) != 0) return;
  if (::pipe2(replies, O_CLOEXEC) != 0) {
    ::close(requests[0]);
    ::close(requests[1]);
    return;
  }
  pid_ = ::fork();
  if (pid_ == 0) Serve(path, requests[0], replies[1]);  // does not return
  ::close(requests[0]);
  ::close(replies[1]);
  requests_.reset(requests[1]);
  replies_.reset(replies[0]);
  if (pid_ < 0) {
    requests_.reset();
    replies_.reset();
  }
}

KernelProbe::~KernelProbe() {
  requests_.reset();  // end of input: the child exits
  replies_.reset();
  if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
}

struct flock KernelProbe::Ask(short type, off_t start, off_t len) {
  std::lock_guard<std::mutex> hold(mutex_);
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  if (!WriteFully(requests_.get(), &fl, sizeof fl) ||
      !ReadFully(replies_.get(), &fl, sizeof fl)) {
    fl.l_type = -1;
  }
  return fl;
}

bool KernelProbe::CanFlock(int op) {
  std::lock_guard<std::mutex> hold(mutex_);
  struct flock fl {};
  fl.l_whence = kFlockQuery;
  fl.l_type = static_cast<short>(op);
  if (!WriteFully(requests_.get(), &fl, sizeof fl) ||
      !ReadFully(replies_.get(), &fl, sizeof fl)) {
    ADD_FAILURE() << "the kernel probe is gone";
    return false;
  }
  return fl.l_type == F_UNLCK;
}

void KernelProbe::Serve(const std::string& path, int requests, int replies) {
  // Hold no copy of the parent's descriptors: an OFD or flock(2) lock lasts
  // as long as any descriptor of its open file description.
  for (int fd = 3; fd < 4096; ++fd) {
    if (fd != requests && fd != replies) ::close(fd);
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
#ifdef F_OFD_GETLK
  const int getlk = F_OFD_GETLK;
#else
  const int getlk = F_GETLK;
#endif
  struct flock fl;
  while (ReadFully(requests, &fl, sizeof fl)) {
    if (fl.l_whence == kFlockQuery) {
      const bool granted = fd >= 0 && ::flock(fd, fl.l_type | LOCK_NB) == 0;
      if (granted) ::flock(fd, LOCK_UN);
      fl.l_type = granted ? F_UNLCK : F_WRLCK;
    } else {
      fl.l_pid = 0;  // F_OFD_GETLK insists
      if (fd < 0 || ::fcntl(fd, getlk, &fl) != 0) fl.l_type = -1;
    }
    if (!WriteFully(replies, &fl, sizeof fl)) break;
  }
  ::_exit(0);
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
