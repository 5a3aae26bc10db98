#!/usr/bin/env bash
# `moesae lm generate` reproduces llama2.c's published greedy text for stories260K (needs the shared data:
# MOESAE_DATA or ../shared/data; skipped when absent), and `moesae lm loss` prints a finite cross-entropy.
source "$(dirname "$0")/common.bash"
golden="$root/../shared/data/README.md"
[ -n "${MOESAE_DATA:-}" ] && golden="$MOESAE_DATA/README.md"
[ -f "$golden" ] || { echo "no shared data (README.md with the golden text) found"; exit 77; }
"$py" - "$golden" > expected.txt <<'PY'
import sys
lines = open(sys.argv[1]).read().split("\n")
start = next(i for i, l in enumerate(lines) if l.startswith("    Once upon a time"))
out = []
for l in lines[start:]:
    if not l.startswith("    "):
        break
    out.append(l[4:])
print("\n".join(out))
PY
"$moesae" lm generate --prompt "Once upon a time" --steps 200 --temperature 0 > got.txt
diff <(sed -e 's/[[:space:]]*$//' expected.txt) <(sed -e 's/[[:space:]]*$//' got.txt)
ce="$("$moesae" lm loss --ctx 64 --max-tokens 2000)"
"$py" -c "import math,sys; v=float(sys.argv[1].split()[-1]); assert math.isfinite(v) and 0.5 < v < 5, v" "$ce"
echo "lm generate OK ($ce)"
