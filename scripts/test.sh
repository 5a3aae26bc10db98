#!/usr/bin/env bash
# Installs the dependencies (idempotent), builds, and runs the whole test suite with ctest in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1
ctest --test-dir build -j"$(nproc)" --output-on-failure --timeout 900
