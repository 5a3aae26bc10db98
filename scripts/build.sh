#!/usr/bin/env bash
# Configures and builds moesae into ./build (Release; the CUDA backend too when nvcc is found).
# Extra arguments go to CMake's configure step (e.g. -DMOESAE_ENABLE_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
elif [ $# -gt 0 ]; then
  cmake -S . -B build "$@"
fi
cmake --build build -j"$(nproc)"
