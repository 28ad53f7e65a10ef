// UniqueFd: sole owner of one file descriptor, closed on destruction.
//
// Move-only. Not synchronised: one thread at a time may use an instance.
#ifndef FILE_LOCKER_SRC_UNIQUE_FD_H_
#define FILE_LOCKER_SRC_UNIQUE_FD_H_

#include <unistd.h>

#include <utility>

namespace locker {

class UniqueFd final {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership without closing; returns the descriptor.
  int release() { return std::exchange(fd_, -1); }

  // Closes the owned descriptor (if any) and takes ownership of fd.
  void reset(int fd = -1) {
    const int old = std::exchange(fd_, fd);
    if (old >= 0) ::close(old);
  }

 private:
  int fd_ = -1;
};

}  // namespace locker

#endif  // FILE_LOCKER_SRC_UNIQUE_FD_H_
