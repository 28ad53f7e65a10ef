#include "holders.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/sysmacros.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

namespace locker {

namespace {

// The identity of a lock as both /proc/locks and fdinfo print it.
using Signature = std::tuple<std::string, int, off_t, off_t>;

Signature SignatureOf(const LockLine& line) {
  return {line.kind, line.mode, line.start, line.length};
}

std::string CommandLine(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string command((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!command.empty() && command.back() == '\0') command.pop_back();
  for (char& c : command) {
    if (c == '\0') c = ' ';
  }
  return command;
}

bool IsNumber(const char* name) {
  if (!*name) return false;
  for (; *name; ++name) {
    if (*name < '0' || *name > '9') return false;
  }
  return true;
}

// pids whose descriptors show a lock with each wanted signature on the file.
std::map<Signature, std::set<pid_t>> ScanDescriptors(
    unsigned major, unsigned minor, unsigned long long ino,
    const std::set<Signature>& wanted) {
  std::map<Signature, std::set<pid_t>> found;
  DIR* proc = ::opendir("/proc");
  if (!proc) return found;
  while (dirent* process = ::readdir(proc)) {
    if (!IsNumber(process->d_name)) continue;
    const std::string fdinfo = std::string("/proc/") + process->d_name + "/fdinfo";
    DIR* fds = ::opendir(fdinfo.c_str());
    if (!fds) continue;  // gone, or not ours to read
    while (dirent* fd = ::readdir(fds)) {
      if (!IsNumber(fd->d_name)) continue;
      std::ifstream in(fdinfo + "/" + fd->d_name);
      std::string text;
      while (std::getline(in, text)) {
        if (text.compare(0, 5, "lock:") != 0) continue;
        LockLine line;
        if (!ParseLockLine(text.substr(5), &line) || line.waiting) continue;
        if (line.dev_major != major || line.dev_minor != minor || line.ino != ino) continue;
        const Signature signature = SignatureOf(line);
        if (wanted.count(signature)) {
          found[signature].insert(static_cast<pid_t>(std::atoi(process->d_name)));
        }
      }
    }
    ::closedir(fds);
  }
  ::closedir(proc);
  return found;
}

}  // namespace

bool ParseLockLine(const std::string& text, LockLine* out) {
  std::istringstream in(text);
  std::string id, word;
  if (!(in >> id) || id.empty() || id.back() != ':') return false;
  if (!(in >> word)) return false;
  LockLine line;
  if (word == "->") {
    line.waiting = true;
    if (!(in >> word)) return false;
  }
  if (word == "FLOCK") line.kind = "flock";
  else if (word == "POSIX") line.kind = "posix";
  else if (word == "OFDLCK") line.kind = "ofd";
  std::string advisory, type, device, start, end;
  long long pid;
  if (!(in >> advisory >> type >> pid >> device >> start >> end)) return false;
  if (type == "READ") line.mode = LOCK_SH;
  else if (type == "WRITE") line.mode = LOCK_EX;
  else line.kind.clear();  // unlocks in progress, leases: not holders
  if (::sscanf(device.c_str(), "%x:%x:%llu", &line.dev_major, &line.dev_minor, &line.ino) != 3) {
    return false;
  }
  line.pid = static_cast<pid_t>(pid);
  line.start = static_cast<off_t>(std::strtoll(start.c_str(), nullptr, 10));
  line.length = end == "EOF" ? 0
                             : static_cast<off_t>(std::strtoll(end.c_str(), nullptr, 10)) -
                                   line.start + 1;
  *out = line;
  return true;
}

Status ListHolders(dev_t dev, ino_t ino, std::vector<Holder>* out) {
  out->clear();
  std::ifstream locks("/proc/locks");
  if (!locks) return Status::Error(errno ? errno : ENOENT);
  const unsigned major = ::major(dev), minor = ::minor(dev);

  std::vector<LockLine> lines;
  std::set<Signature> shared;  // flock and OFD locks: find their holders
  std::string text;
  while (std::getline(locks, text)) {
    LockLine line;
    if (!ParseLockLine(text, &line) || line.waiting || line.kind.empty()) continue;
    if (line.dev_major != major || line.dev_minor != minor || line.ino != ino) continue;
    lines.push_back(line);
    if (line.kind != "posix") shared.insert(SignatureOf(line));
  }
  const auto holders = shared.empty() ? std::map<Signature, std::set<pid_t>>()
                                      : ScanDescriptors(major, minor, ino, shared);

  std::set<std::pair<Signature, pid_t>> reported;
  for (const LockLine& line : lines) {
    std::set<pid_t> pids;
    if (line.kind == "posix") {
      pids.insert(line.pid);
    } else {
      auto it = holders.find(SignatureOf(line));
      if (it != holders.end()) pids = it->second;
    }
    if (pids.empty()) pids.insert(-1);  // not visible to us: say so
    for (pid_t pid : pids) {
      // Identical locks of one process (or one shared description) once.
      if (pid != -1 && !reported.insert({SignatureOf(line), pid}).second) continue;
      Holder holder;
      holder.pid = pid;
      holder.kind = line.kind;
      holder.mode = line.mode;
      holder.start = line.start;
      holder.length = line.length;
      if (pid > 0) holder.command = CommandLine(pid);
      out->push_back(holder);
    }
  }
  return Status::Ok();
}

Status ListWaiters(dev_t dev, ino_t ino, std::vector<Holder>* out) {
  std::ifstream locks("/proc/locks");
  if (!locks) return Status::Error(errno ? errno : ENOENT);
  const unsigned major = ::major(dev), minor = ::minor(dev);
  std::string text;
  while (std::getline(locks, text)) {
    LockLine line;
    if (!ParseLockLine(text, &line) || !line.waiting || line.kind.empty()) continue;
    if (line.dev_major != major || line.dev_minor != minor || line.ino != ino) continue;
    Holder waiter;
    // OFD requests show pid -1; other pids are of live, blocked processes.
    waiter.pid = line.pid > 0 ? line.pid : -1;
    waiter.kind = line.kind;
    waiter.mode = line.mode;
    waiter.start = line.start;
    waiter.length = line.length;
    waiter.waiting = true;
    if (waiter.pid > 0) waiter.command = CommandLine(waiter.pid);
    out->push_back(waiter);
  }
  return Status::Ok();
}

}  // namespace locker
