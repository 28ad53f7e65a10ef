// Tests for the /proc/locks reader: ParseLockLine on recorded holder,
// waiter and fdinfo lines; ListHolders / ListWaiters on recorded /proc text
// (OFD locks shown with pid -1, flock entries that keep an exited taker's
// pid, holders in other pid namespaces, odd command lines); and both against
// a lock this process holds and a request one of its threads has blocked in
// the kernel.
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <errno.h>

#include <future>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "holders.h"
#include "test_util.h"
#include "unique_fd.h"

namespace locker {
namespace {

TEST(ParseLockLineTest, HolderLine) {
  LockLine line;
  ASSERT_TRUE(ParseLockLine("3: FLOCK  ADVISORY  WRITE 22172 fe:00:10954447 0 EOF", &line));
  EXPECT_FALSE(line.waiting);
  EXPECT_EQ("flock", line.kind);
  EXPECT_EQ(LOCK_EX, line.mode);
  EXPECT_EQ(22172, line.pid);
  EXPECT_EQ(0xfeu, line.dev_major);
  EXPECT_EQ(10954447ull, line.ino);
  EXPECT_EQ(0, line.length);
}

TEST(ParseLockLineTest, WaiterLines) {
  LockLine line;
  ASSERT_TRUE(ParseLockLine("3: -> FLOCK  ADVISORY  READ 22142 fe:00:10954447 0 EOF", &line));
  EXPECT_TRUE(line.waiting);
  EXPECT_EQ("flock", line.kind);
  EXPECT_EQ(LOCK_SH, line.mode);
  EXPECT_EQ(22142, line.pid);
  // Newer kernels indent the waiters of a waiter.
  ASSERT_TRUE(ParseLockLine(" 7: -> OFDLCK ADVISORY  WRITE -1 08:01:42 10 19", &line));
  EXPECT_TRUE(line.waiting);
  EXPECT_EQ("ofd", line.kind);
  EXPECT_EQ(-1, line.pid);
  EXPECT_EQ(10, line.start);
  EXPECT_EQ(10, line.length);
}

TEST(ParseLockLineTest, PosixAndOfdHolders) {
  LockLine line;
  ASSERT_TRUE(ParseLockLine("12: POSIX  ADVISORY  READ 4711 00:2a:12345 100 199", &line));
  EXPECT_FALSE(line.waiting);
  EXPECT_EQ("posix", line.kind);
  EXPECT_EQ(LOCK_SH, line.mode);
  EXPECT_EQ(4711, line.pid);
  EXPECT_EQ(100, line.start);
  EXPECT_EQ(100, line.length);

  // OFD locks belong to a description, not a process: the kernel says -1.
  ASSERT_TRUE(ParseLockLine("1: OFDLCK ADVISORY  WRITE -1 fe:00:10954377 100 EOF", &line));
  EXPECT_EQ("ofd", line.kind);
  EXPECT_EQ(LOCK_EX, line.mode);
  EXPECT_EQ(-1, line.pid);
  EXPECT_EQ(100, line.start);
  EXPECT_EQ(0, line.length) << "EOF: to the end of the file";
}

TEST(ParseLockLineTest, DeviceAndInodeFields) {
  LockLine line;
  ASSERT_TRUE(ParseLockLine("2: FLOCK  ADVISORY  WRITE 27382 00:2a:12345 0 EOF", &line));
  EXPECT_EQ(0u, line.dev_major);
  EXPECT_EQ(0x2au, line.dev_minor);
  EXPECT_EQ(12345ull, line.ino);
  ASSERT_TRUE(ParseLockLine("2: FLOCK  ADVISORY  WRITE 27382 fd:01:98765 0 EOF", &line));
  EXPECT_EQ(0xfdu, line.dev_major) << "a device-mapper major, in hex";
  EXPECT_EQ(1u, line.dev_minor);
  EXPECT_EQ(98765ull, line.ino);
  ASSERT_TRUE(
      ParseLockLine("2: POSIX  ADVISORY  WRITE 1 103:05:18446744073709551615 0 EOF", &line));
  EXPECT_EQ(0x103u, line.dev_major);
  EXPECT_EQ(5u, line.dev_minor);
  EXPECT_EQ(18446744073709551615ull, line.ino) << "a 64-bit inode number";
}

TEST(ParseLockLineTest, RangesUpToTheLargestOffset) {
  constexpr off_t kMax = std::numeric_limits<off_t>::max();
  LockLine line;
  ASSERT_TRUE(ParseLockLine("3: POSIX  ADVISORY  WRITE 9 fe:00:7 0 EOF", &line));
  EXPECT_EQ(0, line.start);
  EXPECT_EQ(0, line.length);
  // A lock on the last byte reaches OFFSET_MAX, which the kernel prints as EOF.
  ASSERT_TRUE(ParseLockLine("3: OFDLCK ADVISORY  WRITE -1 fe:00:7 9223372036854775807 EOF", &line));
  EXPECT_EQ(kMax, line.start);
  EXPECT_EQ(0, line.length);
  ASSERT_TRUE(ParseLockLine(
      "3: OFDLCK ADVISORY  READ -1 fe:00:7 9223372036854775806 9223372036854775806", &line));
  EXPECT_EQ(kMax - 1, line.start);
  EXPECT_EQ(1, line.length);
  ASSERT_TRUE(ParseLockLine("3: POSIX  ADVISORY  READ 9 fe:00:7 0 9223372036854775806", &line));
  EXPECT_EQ(0, line.start);
  EXPECT_EQ(kMax, line.length);
}

TEST(ParseLockLineTest, OtherPidNamespaces) {
  // A holder the reader's pid namespace cannot name shows as pid 0.
  LockLine line;
  ASSERT_TRUE(ParseLockLine("4: POSIX  ADVISORY  WRITE 0 00:2a:12345 0 EOF", &line));
  EXPECT_EQ("posix", line.kind);
  EXPECT_EQ(0, line.pid);
}

TEST(ParseLockLineTest, FdinfoLockLine) {
  // /proc/PID/fdinfo/FD: "lock:" and a tab before the /proc/locks format.
  const std::string text = "lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:10954377 100 EOF";
  LockLine line;
  ASSERT_TRUE(ParseLockLine(text.substr(5), &line));
  EXPECT_EQ("ofd", line.kind);
  EXPECT_EQ(10954377ull, line.ino);
  EXPECT_EQ(100, line.start);
}

TEST(ParseLockLineTest, LinesThatAreNotHolders) {
  LockLine line;
  // Leases and requests being undone parse, but name no kind we report.
  ASSERT_TRUE(ParseLockLine("5: LEASE  ACTIVE    READ 300 00:2a:12345 0 EOF", &line));
  EXPECT_EQ("", line.kind);
  ASSERT_TRUE(ParseLockLine("5: DELEG  ACTIVE    READ 300 00:2a:12345 0 EOF", &line));
  EXPECT_EQ("", line.kind);
  ASSERT_TRUE(ParseLockLine("6: FLOCK  ADVISORY  UNLCK 300 00:2a:12345 0 EOF", &line));
  EXPECT_EQ("", line.kind);
  // Not lock lines at all.
  EXPECT_FALSE(ParseLockLine("", &line));
  EXPECT_FALSE(ParseLockLine("pos:\t0", &line));
  EXPECT_FALSE(ParseLockLine("flags:\t02100002", &line));
  EXPECT_FALSE(ParseLockLine("7: FLOCK  ADVISORY  WRITE 300", &line));
  EXPECT_FALSE(ParseLockLine("7: FLOCK  ADVISORY  WRITE 300 00:2a 0 EOF", &line));
  EXPECT_FALSE(ParseLockLine("7: -> ", &line));
}

TEST(CommandFromCmdlineTest, KeepsTheBytesOfEachArgument) {
  using namespace std::string_literals;
  EXPECT_EQ("perl -e print 1", CommandFromCmdline("perl\0-e\0print 1\0"s));
  EXPECT_EQ("sh -c a  b", CommandFromCmdline("sh\0-c\0a  b\0\0\0"s)) << "trailing NULs dropped";
  EXPECT_EQ("worker: idle (3 jobs)", CommandFromCmdline("worker: idle (3 jobs)"s))
      << "a title set in place, without NULs";
  EXPECT_EQ("prog line one\nline two", CommandFromCmdline("prog\0line one\nline two\0"s));
  EXPECT_EQ("prog \x1b[31mred\t\x7f", CommandFromCmdline("prog\0\x1b[31mred\t\x7f\0"s));
  EXPECT_EQ("caf\xe9 \xff\xfe", CommandFromCmdline("caf\xe9\0\xff\xfe\0"s)) << "not UTF-8";
  EXPECT_EQ("", CommandFromCmdline(""s)) << "a zombie's or kernel thread's";
  EXPECT_EQ("", CommandFromCmdline("\0\0"s));
}

// Recorded /proc text in place of the live files.
class RecordedProc final : public ProcSource {
 public:
  std::string locks;
  int locks_err = 0;
  std::vector<std::pair<pid_t, std::string>> fdinfo;
  std::map<pid_t, std::string> cmdline;

  int ReadLocks(std::string* text) const override {
    if (locks_err) return locks_err;
    *text = locks;
    return 0;
  }
  void ForEachFdinfo(
      const std::function<void(pid_t, const std::string&)>& visit) const override {
    for (const auto& entry : fdinfo) visit(entry.first, entry.second);
  }
  std::string Cmdline(pid_t pid) const override {
    auto it = cmdline.find(pid);
    return it == cmdline.end() ? "" : it->second;
  }
};

// The fdinfo text of a descriptor that holds the lock in lock_line.
std::string Fdinfo(const std::string& lock_line) {
  return "pos:\t0\nflags:\t02100002\nmnt_id:\t27\nino:\t10954377\nlock:\t" + lock_line + "\n";
}

const dev_t kDev = makedev(0xfe, 0x00);
constexpr ino_t kIno = 10954377;

// One line of /proc/locks for each kind of lock on fe:00:10954377, and lines
// that must not count: the same inode number on other devices, another
// inode, waiters.
RecordedProc Sample() {
  using namespace std::string_literals;
  RecordedProc proc;
  proc.locks =
      "1: OFDLCK ADVISORY  WRITE -1 fe:00:10954377 100 EOF\n"
      "1: -> OFDLCK ADVISORY  WRITE -1 fe:00:10954377 100 199\n"
      "2: FLOCK  ADVISORY  READ 27382 fe:00:10954377 0 EOF\n"
      " 2: -> FLOCK  ADVISORY  WRITE 5100 fe:00:10954377 0 EOF\n"
      "3: POSIX  ADVISORY  WRITE 6000 fe:00:10954377 0 9\n"
      "4: OFDLCK ADVISORY  READ -1 fe:00:10954377 10 19\n"
      "5: POSIX  ADVISORY  READ 0 fe:00:10954377 20 29\n"
      "6: POSIX  ADVISORY  WRITE 7000 fd:01:10954377 0 EOF\n"
      "6: -> POSIX  ADVISORY  WRITE 7005 fd:01:10954377 0 EOF\n"
      "7: FLOCK  ADVISORY  WRITE 7001 00:2a:10954377 0 EOF\n"
      "7: POSIX  ADVISORY  WRITE 7003 fd:00:10954377 0 EOF\n"
      "7: POSIX  ADVISORY  WRITE 7004 fe:01:10954377 0 EOF\n"
      "9: FLOCK  ADVISORY  READ 5001 fe:00:10954377 0 EOF\n"
      "8: OFDLCK ADVISORY  WRITE -1 fe:00:10954378 100 EOF\n";
  // The OFD lock's description, in a process and in its forked child.
  proc.fdinfo.push_back({4242, Fdinfo("1: OFDLCK ADVISORY  WRITE -1 fe:00:10954377 100 EOF")});
  proc.fdinfo.push_back({4243, Fdinfo("1: OFDLCK ADVISORY  WRITE -1 fe:00:10954377 100 EOF")});
  // The flock lock, taken by 27382 (gone) and now held by 5000 alone, on
  // two descriptors of one description.
  proc.fdinfo.push_back({5000, Fdinfo("1: FLOCK  ADVISORY  READ 27382 fe:00:10954377 0 EOF")});
  proc.fdinfo.push_back({5000, Fdinfo("1: FLOCK  ADVISORY  READ 27382 fe:00:10954377 0 EOF")});
  // A second shared flock lock, on a description of its own, held by 5000
  // and 5001: each process is named once, not once a lock.
  proc.fdinfo.push_back({5000, Fdinfo("1: FLOCK  ADVISORY  READ 5001 fe:00:10954377 0 EOF")});
  proc.fdinfo.push_back({5001, Fdinfo("1: FLOCK  ADVISORY  READ 5001 fe:00:10954377 0 EOF")});
  // A descriptor on another file, and one with no lock.
  proc.fdinfo.push_back({7000, Fdinfo("1: POSIX  ADVISORY  WRITE 7000 fd:01:10954377 0 EOF")});
  proc.fdinfo.push_back({7002, "pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t10954377\n"});
  proc.cmdline[4242] = "perl\0-MFile::Locker\0-e\0my $g = lock_range(...)\0"s;
  proc.cmdline[4243] = "worker: idle"s;
  proc.cmdline[5000] = "sh\0-c\0echo 'two\nlines'; \x1b[1mbold\0"s;
  proc.cmdline[5100] = "flock\0/tmp/x y.lock\0true\0"s;
  proc.cmdline[6000] = "caf\xe9\0\xff\0"s;
  proc.cmdline[27382] = "the taker, long gone"s;
  return proc;
}

// "kind mode start length pid command" for each holder, in order.
std::vector<std::string> Describe(const std::vector<Holder>& holders) {
  std::vector<std::string> lines;
  for (const Holder& h : holders) {
    lines.push_back(h.kind + (h.mode == LOCK_EX ? " EX " : h.mode == LOCK_SH ? " SH " : " ?? ") +
                    std::to_string(h.start) + " " + std::to_string(h.length) + " " +
                    std::to_string(h.pid) + (h.waiting ? " waiting" : "") +
                    (h.remote ? " remote" : "") + " [" + h.command + "]");
  }
  return lines;
}

TEST(RecordedHoldersTest, EachLockWithTheProcessesThatHoldIt) {
  const RecordedProc proc = Sample();
  std::vector<Holder> holders = {Holder()};  // cleared first
  ASSERT_OK(ListHolders(proc, kDev, kIno, &holders));
  const std::vector<std::string> want = {
      "ofd EX 100 0 4242 [perl -MFile::Locker -e my $g = lock_range(...)]",
      "ofd EX 100 0 4243 [worker: idle]",
      "flock SH 0 0 5000 [sh -c echo 'two\nlines'; \x1b[1mbold]",
      "flock SH 0 0 5001 []",
      "posix EX 0 10 6000 [caf\xe9 \xff]",
      "ofd SH 10 10 -1 []",
      "posix SH 20 10 -1 []",
  };
  EXPECT_EQ(want, Describe(holders));
}

TEST(RecordedHoldersTest, HoldersInAnotherPidNamespaceAreUnknownNotPidZero) {
  RecordedProc proc;
  proc.locks = "1: POSIX  ADVISORY  WRITE 0 00:2a:12345 0 EOF\n";
  proc.cmdline[0] = "must not be read";
  std::vector<Holder> holders;
  ASSERT_OK(ListHolders(proc, makedev(0, 0x2a), 12345, &holders));
  ASSERT_EQ(1u, holders.size());
  EXPECT_EQ(-1, holders[0].pid);
  EXPECT_EQ("", holders[0].command);
}

TEST(RecordedHoldersTest, AnFdinfoOnAnotherDeviceDoesNotName) {
  // Same inode number, same lock, another device: not a holder of ours.
  RecordedProc proc;
  proc.locks = "1: FLOCK  ADVISORY  WRITE 300 fe:00:10954377 0 EOF\n";
  proc.fdinfo.push_back({301, Fdinfo("1: FLOCK  ADVISORY  WRITE 300 fd:01:10954377 0 EOF")});
  proc.fdinfo.push_back({302, Fdinfo("1: FLOCK  ADVISORY  READ 300 fe:00:10954377 0 EOF")});
  std::vector<Holder> holders;
  ASSERT_OK(ListHolders(proc, kDev, kIno, &holders));
  EXPECT_EQ(std::vector<std::string>{"flock EX 0 0 -1 []"}, Describe(holders))
      << "neither another device nor another mode names the holder";
}

TEST(RecordedHoldersTest, WaitersWithTheirPidsAndCommands) {
  const RecordedProc proc = Sample();
  std::vector<Holder> waiters = {Holder()};
  waiters[0].command = "kept";
  ASSERT_OK(ListWaiters(proc, kDev, kIno, &waiters));
  const std::vector<std::string> want = {
      " ?? 0 0 -1 [kept]",
      "ofd EX 100 100 -1 waiting []",
      "flock EX 0 0 5100 waiting [flock /tmp/x y.lock true]",
  };
  EXPECT_EQ(want, Describe(waiters)) << "appended after what was there";

  RecordedProc hidden;
  hidden.locks = "1: -> POSIX  ADVISORY  READ 0 fe:00:10954377 0 EOF\n";
  std::vector<Holder> none_named;
  ASSERT_OK(ListWaiters(hidden, kDev, kIno, &none_named));
  EXPECT_EQ(std::vector<std::string>{"posix SH 0 0 -1 waiting []"}, Describe(none_named));
}

TEST(RecordedHoldersTest, UnreadableProcLocksIsAnError) {
  RecordedProc proc;
  proc.locks_err = EACCES;
  std::vector<Holder> holders;
  EXPECT_ERR(EACCES, ListHolders(proc, kDev, kIno, &holders));
  EXPECT_ERR(EACCES, ListWaiters(proc, kDev, kIno, &holders));
}

TEST(RecordedHoldersTest, NothingOnTheFile) {
  RecordedProc proc = Sample();
  std::vector<Holder> holders;
  ASSERT_OK(ListHolders(proc, kDev, 1, &holders));
  EXPECT_TRUE(holders.empty());
  ASSERT_OK(ListWaiters(proc, kDev, 1, &holders));
  EXPECT_TRUE(holders.empty());
}

class HoldersTest : public TempFileTest {
 protected:
  HoldersTest() : TempFileTest("holders") {}
};

TEST_F(HoldersTest, ListWaitersNamesTheBlockedThreadsProcess) {
  struct stat st;
  ASSERT_EQ(0, ::fstat(fd_.get(), &st));
  ASSERT_EQ(0, ::flock(fd_.get(), LOCK_EX));

  std::vector<Holder> waiters;
  ASSERT_OK(ListWaiters(st.st_dev, st.st_ino, &waiters));
  EXPECT_TRUE(waiters.empty()) << "nobody waits yet";

  UniqueFd other = OpenAgain();
  ASSERT_TRUE(other.valid());
  auto blocked = std::async(std::launch::async, [&] { return ::flock(other.get(), LOCK_SH); });
  ASSERT_TRUE(WaitForFlockWaiter(st.st_ino));

  ASSERT_OK(ListWaiters(st.st_dev, st.st_ino, &waiters));  // appends
  ASSERT_EQ(1u, waiters.size());
  EXPECT_TRUE(waiters[0].waiting);
  EXPECT_EQ(::getpid(), waiters[0].pid);
  EXPECT_EQ("flock", waiters[0].kind);
  EXPECT_EQ(LOCK_SH, waiters[0].mode);
  EXPECT_FALSE(waiters[0].command.empty());

  std::vector<Holder> holders;
  ASSERT_OK(ListHolders(st.st_dev, st.st_ino, &holders));
  ASSERT_EQ(1u, holders.size()) << "the holder, not the waiter";
  EXPECT_FALSE(holders[0].waiting);
  EXPECT_EQ(LOCK_EX, holders[0].mode);

  ASSERT_EQ(0, ::flock(fd_.get(), LOCK_UN));
  EXPECT_EQ(0, blocked.get());
  waiters.clear();
  ASSERT_OK(ListWaiters(st.st_dev, st.st_ino, &waiters));
  EXPECT_TRUE(waiters.empty()) << "the request was granted";
}

}  // namespace
}  // namespace locker
