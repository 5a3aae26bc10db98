#!/usr/bin/env bash
# Distributed throughput at 1 vs 2 ranks on this machine, in one run: the Scale SAE at the paper's shape and the
# dense TopK SAE (F = 24576), each data-parallel and sharded (experts; the TopK dictionary) over the ranks; batch
# 2048 tokens per step split over the ranks, CPU backend over MPI.
#   bench/data_parallel_bench.sh [build/bin] [extra bench_data_parallel options...]
# Prints each configuration's JSON line and the 2-rank/1-rank ratio. Not a test: see docs/performance.md.
set -euo pipefail
bin="${1:-build/bin}"
shift || true
command -v mpirun >/dev/null || { echo "mpirun not found (scripts/setup-deps.sh installs Open MPI)"; exit 1; }
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}" OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"
one_vs_two() {  # <label> <1-rank json> <2-rank json>
  python3 - "$@" <<'PY'
import json, sys
label, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
moved = f"all-reduce of {b['allreduce_mb']:.0f} MB of gradients"
if b["alltoall_mb"] > 0:
    moved += f", all-to-all of {b['alltoall_mb']:.0f} MB of tokens"
print(f"{label}: 2 ranks {b['tokens_per_s']:.0f} vs 1 rank {a['tokens_per_s']:.0f} tokens/s -> "
      f"{b['tokens_per_s'] / a['tokens_per_s']:.2f}x; communication {100 * b['comm_share']:.0f}% of the 2-rank step "
      f"({moved} per step)")
PY
}
for arch in scale topk; do
  one=$(mpirun -np 1 "$bin/bench_data_parallel" --arch "$arch" "$@")
  two=$(mpirun -np 2 "$bin/bench_data_parallel" --arch "$arch" "$@")
  echo "$one"
  echo "$two"
  one_vs_two "$arch, data-parallel" "$one" "$two"
  # The experts (TopK: the dictionary) sharded over the 2 ranks instead.
  ep=$(mpirun -np 2 "$bin/bench_data_parallel" --arch "$arch" --layout expert "$@")
  echo "$ep"
  one_vs_two "$arch, $([ "$arch" = scale ] && echo experts || echo dictionary) sharded over 2 ranks" "$one" "$ep"
done
