// output_lock.h — one process owns an output while it runs. A resumable job (training, sampling
// to .npz, tokenizing) takes an exclusive advisory lock (flock) on a file inside its output for
// as long as it runs; a second process on the same output gets a one-line error naming the
// holder's pid instead of mixing its pieces into the first one's. The kernel frees the lock when
// the holder dies, kill -9 included, so an interrupted job still resumes.
#pragma once
#include <string>

namespace rar {

class OutputLock {
 public:
  OutputLock() = default;  // holds nothing
  // Locks `lock_file` (created if missing, its folder must exist) for the output named `output`
  // in the error: "<output> is in use by another rar process (pid N)".
  OutputLock(const std::string& lock_file, const std::string& output);
  ~OutputLock();
  OutputLock(OutputLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  OutputLock& operator=(OutputLock&& o) noexcept;
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace rar
