#!/usr/bin/env bash
# The main job on the embedded default: installs the dependencies, builds, and runs experiments/quickstart.yaml
# (synthetic ground-truth data; TopK, Gated, Switch and Scale SAE at matched active width; a few minutes on 2 cores),
# then prints the comparison table. Results go to out/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/build.sh
./build/bin/moesae run experiments/quickstart.yaml "$@"
