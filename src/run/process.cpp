#include "run/process.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "train/trainer.h"  // stop_requested

namespace moesae {

int lock_file(const std::string& path, bool wait) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot create the lock file '", path, "': ", std::strerror(errno));
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    int rc;
    while ((rc = ::fcntl(fd, wait ? F_SETLKW : F_SETLK, &fl)) != 0 && errno == EINTR && wait && !stop_requested()) {
    }
    if (rc != 0) {
      ::close(fd);
      if (wait && stop_requested()) fail("stopped while waiting for the lock '", path, "'");
      if (wait) fail("cannot lock '", path, "': ", std::strerror(errno));
      return -1;
    }
    struct stat a {}, b {};
    if (::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
      return fd;
    ::close(fd);  // the file was removed by its previous holder between open and lock: take the new one
  }
  return -1;
}

void unlock_file(int fd, const std::string& path) {
  ::unlink(path.c_str());
  ::close(fd);
}

bool file_locked(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  const bool held = ::fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  ::close(fd);
  return held;
}

std::string own_executable() {
  std::error_code ec;
  const std::filesystem::path p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) fail("cannot find this program's executable (/proc/self/exe): ", ec.message());
  return p.string();
}

}  // namespace moesae
