# Sourced by the CLI tests (tests/cli/*.sh, run by ctest as `bash TEST.sh /path/to/moesae`): sets $moesae, $py
# (Debian's python with numpy and h5py; exit 77 = skipped without them) and $root, and moves into a fresh temporary
# directory that is removed on exit.
set -euo pipefail
moesae="$(realpath "$1")"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py=/usr/bin/python3
"$py" -c 'import numpy, h5py' 2>/dev/null || { echo "needs $py with numpy and h5py"; exit 77; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
