#!/usr/bin/python3
"""The paper's claims beside the values measured from collected grid files, as claims.md (no figures).

    analysis/claims.py out/fig3-flops-matched.h5 out/fig4-active-experts.h5 ... --out claims.md

Each claim (the paper's number and section) gets its measured value for the paper defaults and for
`compat: reference`, a verdict (holds / holds in direction only / partly holds / does not hold / not measurable, with
what is missing) and how it was measured. The measuring code is analysis/moesae_analysis/claims.py;
analysis/make_figures.py writes the same claims.md together with the figures and their status. Runs on activations
of different widths (model.d) are measured apart: claims-d64.md, claims-d768.md, ...
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from moesae_analysis import claims, records  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collections", nargs="+", help="collected grid files (moesae collect ... --out GRID.h5)")
    ap.add_argument("--out", default="claims.md", help="Markdown file to write (default: claims.md)")
    ap.add_argument("--json", help="also write the measurements as JSON here")
    a = ap.parse_args()
    cols, runs = records.load(a.collections)
    if not runs:
        raise SystemExit("error: no finished runs in the given files")
    parts = records.by_dimension(cols, runs)
    for d, cols_d, runs_d in parts:
        suffix = "" if len(parts) == 1 else f"-d{d}"
        md = pathlib.Path(a.out)
        md = md.with_name(md.stem + suffix + md.suffix)
        results = claims.measure_all(runs_d)
        for c in claims.CLAIMS:
            for v in records.COMPATS:
                m = results[c.id][v]
                print(f"claim {c.id}{suffix} ({records.COMPAT_LABEL[v]}): {m.verdict}: {m.value}")
        md.write_text(claims.render_markdown(cols_d, results))
        if a.json:
            js = pathlib.Path(a.json)
            js.with_name(js.stem + suffix + js.suffix).write_text(json.dumps(claims.report(results), indent=1))
        print(f"wrote {md}")


if __name__ == "__main__":
    main()
