#!/usr/bin/env bash
# Installs every Debian package moesae needs to build, test and run (Debian 12 "bookworm").
# Usage: scripts/setup-deps.sh [--bench]   (--bench also installs python3-torch for bench/ comparisons)
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libopenblas-openmp-dev libhdf5-dev hdf5-tools libyaml-cpp-dev
  libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  python3 python3-numpy python3-h5py python3-yaml python3-matplotlib
)
# SLURM + munge, for tests/cli/slurm_array.sh: scripts/slurm-local.sh starts a throwaway single-node cluster by hand.
# Their install scripts try to start munge/slurmctld/slurmd as services; "policy-rc.d denied execution of start"
# (containers), no init system, or the absent /etc/slurm/slurm.conf all just leave them stopped, which is fine.
PKGS+=(slurm-wlm slurmctld slurmd slurm-client munge)
if [ "${1:-}" = "--bench" ]; then PKGS+=(python3-torch); fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "moesae dependencies: all installed"
