// moesae run: process-level helpers of the orchestrator: advisory file locks (one trainer per run, one data
// preparer per experiment, across processes and SLURM tasks on a shared file system with POSIX locks) and the path
// of this program's own executable (for child processes and job scripts).
#pragma once
#include <string>

namespace moesae {

// A POSIX record lock on `path` (created if needed); returns its file descriptor, or -1 when another process holds
// it and `wait` is false (with `wait`, blocks until it is free; a stop request ends the wait with an error). The
// holder removes the file when done (unlock_file), so a lock taken on a file that was meanwhile removed is retried.
int lock_file(const std::string& path, bool wait);
// Removes the lock file and releases the lock.
void unlock_file(int fd, const std::string& path);
// Whether another process holds the lock on `path` (false when the file does not exist).
bool file_locked(const std::string& path);

// The absolute path of the running executable (/proc/self/exe); fails with one message when it cannot be read.
std::string own_executable();

}  // namespace moesae
