// Shared by the benchmark programs: the machine's GEMM limit and running a Python peer implementation.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/log.h"

namespace moesae::bench {

// Best of `reps` timed runs (after one untimed) of a square sgemm: the machine's practical GEMM limit, GFLOP/s.
inline double sgemm_peak_gflops(int size, int reps) {
  std::vector<float> a(size_t(size) * size, 0.5f), b(size_t(size) * size, 0.25f), c(size_t(size) * size);
  double best = 1e30;
  for (int r = 0; r <= reps; ++r) {
    Timer t;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, size, size, size, 1.f, a.data(), size, b.data(), size, 0.f,
                c.data(), size);
    if (r > 0) best = std::min(best, t.seconds());
  }
  return 2.0 * size * double(size) * size / best / 1e9;
}

// Best seconds of `reps` timed runs of fn, after `warmup` untimed ones.
template <typename Fn>
double best_of(int reps, Fn&& fn, int warmup = 1) {
  for (int w = 0; w < warmup; ++w) fn();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    Timer t;
    fn();
    best = std::min(best, t.seconds());
  }
  return best;
}

struct PeerOutput {
  int rc = -1;         // exit status of the command (-1: could not start it)
  std::string stdout_text;
  // The number after `"key":` in the output (a JSON line), or 0 when absent.
  double number(const std::string& key) const {
    const std::string quoted = "\"" + key + "\"";
    const auto pos = stdout_text.find(quoted);
    if (pos == std::string::npos) return 0.0;
    return std::atof(stdout_text.c_str() + stdout_text.find(':', pos) + 1);
  }
};

// Runs a shell command (the peer) and collects its standard output.
inline PeerOutput run_peer(const std::string& cmd) {
  PeerOutput out;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out.stdout_text += buf;
  out.rc = ::pclose(p);
  return out;
}

}  // namespace moesae::bench
