# The exact distributed global Top-K (src/parallel/distributed_topk.h) under mpirun at 2, 3 and 4 ranks: the test
# binary <build>/tests/test_distributed_topk checks every rank's kept counts against the 1-process Top-K over the
# union of all ranks' candidates (ties included); rank 0 prints the all-reduced verdict.
# Run by ctest as `bash distributed_topk.sh /path/to/build/bin/moesae`; exit 77 (skipped) without mpirun.
set -euo pipefail
build="$(dirname "$(dirname "$(realpath "$1")")")"
testbin="$build/tests/test_distributed_topk"
command -v mpirun >/dev/null || { echo "skipped: mpirun not found"; exit 77; }
[[ -x "$testbin" ]] || { echo "FAIL: $testbin not built"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/mpi_env.bash"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MOESAE_COMM_TIMEOUT=20
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for n in 2 3 4; do
  rc=0
  timeout 60 mpirun -np "$n" "$testbin" > "$log" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]] || ! grep -q "^distributed_topk: $n ranks: all tests passed on every rank" "$log"; then
    tail -n 40 "$log"
    echo "FAIL: test_distributed_topk at $n ranks (rc $rc)"
    exit 1
  fi
  grep "^distributed_topk:" "$log"
done
