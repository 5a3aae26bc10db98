#!/usr/bin/python3
"""The paper's figures and claims from collected grid files.

    analysis/make_figures.py out/fig3-flops-matched.h5 out/fig4-active-experts.h5 \
        out/fig5-feature-scaling.h5 out/appc-decomposition.h5 --out figures/

Inputs are files written by `moesae collect GRID.yaml --out GRID.h5` (docs/records.md, "Grid collections"), one per
grid; give all of them together so that every figure finds its runs. Writes into --out:

    fig2_omega.png                  Fig. 2   omega vs active experts e
    fig3_flops_matched.png          Fig. 3   FLOPS-matched MSE (in/out of domain), Loss Recovered vs L0
    fig4_active_experts.png         Fig. 4   MSE / Loss Recovered vs L0 per e
    fig5_feature_scaling.png        Fig. 5   Feature Scaling on vs off
    fig6_specialization.png         Fig. 6   intra- vs inter-expert redundancy; expert activation CDF
    fig7_activation_similarity.png  Fig. 7   activation similarity reduction by Feature Scaling
    fig8_redundancy.png             Fig. 8   feature redundancy
    figC_decomposition.png          App. C   decomposition methods (Fig. 10)
    figD_overlaps.png               App. D   overlap distributions (Fig. 11)
    claims.md                       the paper's claims beside the measured values, and what could not be drawn
    report.json                     the same, machine-readable

Paper defaults (model.compat: paper) and compat: reference are drawn side by side. Runs on activations of different
widths (model.d, e.g. the laptop and the GPT-2 grids) are never mixed: each width gets its own DIR/d<d>/. A panel whose runs or metric
are missing says so in the PNG, in a log line and in claims.md. Details: analysis/README.md, docs/analysis.md.
"""
import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from moesae_analysis import claims, figures, records  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collections", nargs="+", help="collected grid files (moesae collect ... --out GRID.h5)")
    ap.add_argument("--out", required=True, help="output directory (created if needed)")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    cols, runs = records.load(a.collections)
    for c in cols:
        print(f"{c.path}: grid '{c.name}', {len(c.runs)} of {c.rows} runs finished")
    if not runs:
        raise SystemExit("error: no finished runs in the given files")
    parts = records.by_dimension(cols, runs)
    for d, cols_d, runs_d in parts:
        target = out if len(parts) == 1 else out / f"d{d}"
        if len(parts) > 1:
            print(f"-- runs on d = {d} activations ({len(runs_d)} runs) -> {target}")
        report_one(cols_d, runs_d, target)


def report_one(cols, runs, out):
    """Figures, claims.md and report.json for runs on one kind of data."""
    out.mkdir(parents=True, exist_ok=True)
    figs = figures.make_all(runs, out)
    results = claims.measure_all(runs)
    for c in claims.CLAIMS:
        for v in records.COMPATS:
            m = results[c.id][v]
            print(f"claim {c.id} ({records.COMPAT_LABEL[v]}): {m.verdict}: {m.value}")
    (out / "claims.md").write_text(claims.render_markdown(cols, results, figs))
    (out / "report.json").write_text(json.dumps(claims.report(results, figs), indent=1))
    drawn = sum(f.status == "drawn" for f in figs)
    print(f"wrote {len(figs)} figures ({drawn} complete, {len(figs) - drawn} with panels missing or partly drawn), "
          f"claims.md and report.json to {out}")


if __name__ == "__main__":
    main()
