// `moesae info`: versions, threads and the CUDA devices this build can see.
#include <omp.h>

#include <cblas.h>
#include <cstdio>

#include "cli/commands.h"
#include "core/version.h"
#ifdef MOESAE_HAVE_CUDA
#include "backend/cuda/device_info.h"
#endif

namespace moesae::cli {

Command add_info(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("info", "Show the build, threads and visible GPUs");
  return {sub, []() {
    std::printf("moesae %s\n", kMoesaeVersion);
    std::printf("BLAS: %s\n", openblas_get_config());
    std::printf("OpenMP threads: %d\n", omp_get_max_threads());
#ifdef MOESAE_HAVE_CUDA
    std::string why;
    auto devs = cuda::list_devices(&why);
    std::printf("CUDA: built in (runtime %d, driver %d)\n", cuda::runtime_version(), cuda::driver_version());
    if (devs.empty()) std::printf("  no usable GPU: %s\n", why.c_str());
    for (auto& d : devs)
      std::printf("  GPU %d: %s (sm_%d%d, %.1f GiB, %d SMs)\n", d.index, d.name.c_str(), d.cc_major, d.cc_minor,
                  d.total_memory / 1073741824.0, d.multiprocessors);
#else
    std::printf("CUDA: not built (configure with nvcc on PATH and -DMOESAE_ENABLE_CUDA=ON)\n");
#endif
    return 0;
  }};
}

}  // namespace moesae::cli
