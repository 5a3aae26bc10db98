// moesae CUDA: device discovery through the CUDA runtime (no driver library is linked, so binaries built with
// CUDA still start on machines without a GPU). Plain C++ header: safe to include from host-only code.
#pragma once
#include <string>
#include <vector>

namespace moesae::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  size_t total_memory = 0;
  int multiprocessors = 0;
};

// Visible CUDA devices; empty when there is no GPU or no driver. `why` (optional) receives the reason.
std::vector<DeviceInfo> list_devices(std::string* why = nullptr);
// Versions of the CUDA runtime this binary uses and of the installed driver (0 when absent).
int runtime_version();
int driver_version();

}  // namespace moesae::cuda
