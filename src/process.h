// The calling process's id without a system call per query.
//
// Safe from any thread. The cached value is refreshed in the child of every
// fork() that runs pthread_atfork handlers (fork(), and so Perl's fork);
// raw clone() system calls that skip those handlers are not seen.
#ifndef FILE_LOCKER_SRC_PROCESS_H_
#define FILE_LOCKER_SRC_PROCESS_H_

#include <sys/types.h>

namespace locker {

pid_t CurrentPid();

}  // namespace locker

#endif  // FILE_LOCKER_SRC_PROCESS_H_
