# The communicators (src/comm/) under mpirun at 1-4 ranks, via the test driver bench/comm_check (built into the
# same bin/ as moesae):
#   1. every collective at N = 1, 2, 3, 4 ranks equals the sequential (1-rank) result; the verdict is all-reduced;
#   2. a failure injected on one rank makes every rank exit non-zero (not only that rank);
#   3. a rank that dies (_exit(9)) or hangs mid-run makes the others exit within MOESAE_COMM_TIMEOUT with
#      "error: rank R: collective <name> did not complete within T s (a rank died or hangs)", not a hang.
# Run by ctest as `bash comm_mpi.sh /path/to/build/bin/moesae`; exit 77 (skipped) without mpirun.
# MOESAE_COMM_BENCH=1 also prints the all-to-all-v bandwidth comparison at 2 and 4 ranks.
set -euo pipefail
bin="$(dirname "$(realpath "$1")")"
check="$bin/comm_check"
command -v mpirun >/dev/null || { echo "mpirun not found"; exit 77; }
[[ -x "$check" ]] || { echo "FAIL: $check not built"; exit 1; }
# Open MPI as root, more ranks than cores, shared memory only (as scripts/test.sh sets for ctest).
source "$(dirname "${BASH_SOURCE[0]}")/mpi_env.bash"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# 1. correctness at every rank count, and the local communicator
"$check" --comm local >"$tmp/out" 2>&1 || { cat "$tmp/out"; echo "FAIL: local communicator"; exit 1; }
grep -q 'comm_check: local, 1 ranks: [0-9]* checks passed' "$tmp/out"
for n in 1 2 3 4; do
  timeout 60 mpirun -np "$n" "$check" >"$tmp/out" 2>&1 || { cat "$tmp/out"; echo "FAIL: $n ranks"; exit 1; }
  grep -q "comm_check: mpi, $n ranks: [0-9]* checks passed" "$tmp/out" || { cat "$tmp/out"; echo "FAIL: $n"; exit 1; }
  grep -h 'checks passed' "$tmp/out"
done

# 2. one rank's failure is everybody's: rank 0 reports it and mpirun exits non-zero
rc=0
timeout 60 mpirun -np 3 "$check" --inject-failure 2 >"$tmp/out" 2>&1 || rc=$?
if [[ $rc -eq 0 || $rc -eq 124 ]] || ! grep -q 'comm_check: mpi, 3 ranks: FAILED 1 of' "$tmp/out"; then
  cat "$tmp/out"; echo "FAIL: a failure on rank 2 was not reported by all ranks (rc $rc)"; exit 1
fi
echo "injected failure on rank 2: reported, rc $rc"

# 3. a dead or hung rank. Open MPI's default kills the job as soon as a rank exits non-zero, so the dead-rank case
#    turns that off (orte_abort_on_non_zero_status 0, like srun without --kill-on-bad-exit): then only our watchdog
#    can end the job. The hung-rank case runs with the defaults.
expect_timeout() {  # <what> <mpirun args...>
  local what="$1"; shift
  local t0=$SECONDS rc=0
  MOESAE_COMM_TIMEOUT=5 timeout 60 mpirun "$@" >"$tmp/out" 2>&1 || rc=$?
  local took=$((SECONDS - t0))
  if [[ $rc -eq 0 || $rc -eq 124 || $rc -eq 137 ]]; then
    cat "$tmp/out"; echo "FAIL: $what: rc $rc after ${took}s (0 = not detected, 124 = hang)"; exit 1
  fi
  local re='error: rank [0-9]+: collective all_reduce\(sum, f32, n=1000\) did not complete within 5 s \(a rank died or hangs\)'
  grep -Eq "$re" "$tmp/out" || { cat "$tmp/out"; echo "FAIL: $what: no timeout message"; exit 1; }
  (( took < 40 )) || { echo "FAIL: $what took ${took}s"; exit 1; }
  echo "$what: others exited in ${took}s (rc $rc): $(grep -Eo "$re" "$tmp/out" | head -1)"
}
expect_timeout "rank 1 dies at 3 ranks" --mca orte_abort_on_non_zero_status 0 -np 3 "$check" --kill-rank 1
expect_timeout "rank 1 dies at 2 ranks" --mca orte_abort_on_non_zero_status 0 -np 2 "$check" --kill-rank 1
expect_timeout "rank 1 hangs at 4 ranks" -np 4 "$check" --hang-rank 1

if [[ "${MOESAE_COMM_BENCH:-0}" == 1 ]]; then
  for n in 2 4; do timeout 120 mpirun -np "$n" "$check" --bench; done
fi
echo "comm_mpi: OK"
