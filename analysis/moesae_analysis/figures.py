"""The paper's figures (Fig. 2-8, Appendix C Fig. 10, Appendix D Fig. 11) drawn from collected runs.

Each `figN_*` function takes the finished runs of every collected file, selects the runs its paper counterpart
compares (records.py), draws one PNG with the paper defaults and `compat: reference` side by side (one row of panels
each), and returns a `FigureResult` saying which panels were drawn and, for the others, which metric or run was
missing. A panel without data shows that reason in place of a plot, so every PNG exists; nothing is filled in.
"""
from __future__ import annotations

import math
import pathlib
import re
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from . import records as R  # noqa: E402

DRAWN, PARTLY, NOT_DRAWN = "drawn", "partly drawn", "not drawn"


@dataclass
class FigureResult:
    """What one figure function produced: per panel its state (DRAWN, PARTLY drawn, NOT_DRAWN) and, unless fully
    drawn, what was missing."""
    file: str
    paper: str                                   # the paper figure it stands for
    panels: dict = field(default_factory=dict)   # panel name -> (state, reason)
    notes: list = field(default_factory=list)    # how runs were chosen, substitutions, averaged points

    def ok(self, panel):
        self.panels[panel] = (DRAWN, "")

    def partly(self, panel, why):
        self.panels[panel] = (PARTLY, why)

    def skip(self, panel, why):
        self.panels[panel] = (NOT_DRAWN, why)

    def count(self, *states):
        return sum(s in states for s, _ in self.panels.values())

    @property
    def status(self) -> str:
        """'drawn' (every panel complete), 'partial' (something drawn, something missing) or 'not drawn'."""
        if self.panels and self.count(DRAWN) == len(self.panels):
            return "drawn"
        return "partial" if self.count(DRAWN, PARTLY) else "not drawn"

    def missing(self):
        """{panel: 'not drawn: why' | 'partly drawn: why'} for the panels that are not complete."""
        return {p: f"{s}: {why}" for p, (s, why) in self.panels.items() if s != DRAWN}

    def missing_grouped(self):
        """[(panels, 'not drawn: why')]: the incomplete panels grouped by the same reason, in panel order."""
        groups = {}
        for p, msg in self.missing().items():
            groups.setdefault(msg, []).append(p)
        return [(panels, msg) for msg, panels in groups.items()]


# ---- drawing helpers -------------------------------------------------------------------------------------------------

def _figure(nrows, ncols, title, w=4.2, h=3.3):
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows + 0.6), squeeze=False)
    fig.suptitle(title, fontsize=11)
    return fig, axes


def _save(fig, out_dir, name):
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path = pathlib.Path(out_dir) / name
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _not_drawn(res, ax, panel, title, why):
    """Records the panel as not drawn and shows why in its place."""
    res.skip(panel, why)
    _unavailable(ax, title, why)


def _unavailable(ax, title, reason):
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, "not drawn:\n" + _wrap(reason, 44), ha="center", va="center", fontsize=8, color="0.35",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_color("0.8")


def _wrap(text, width):
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join(lines + [line])


def _log2_x(ax, values):
    """Log2 x axis ticked at the powers of two spanning the values (the paper's L0 and e grids are powers of two)."""
    values = sorted({v for v in values if v and math.isfinite(v) and v > 0})
    if not values:
        return
    ax.set_xscale("log", base=2)
    lo, hi = math.floor(math.log2(values[0])), math.ceil(math.log2(values[-1]))
    ticks = [2 ** p for p in range(lo, hi + 1)]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()


def _finish(ax, title, xlabel, ylabel, log2_values, legend):
    """The decoration every line panel ends with: log2 x axis over `log2_values`, labels, title and legend."""
    _log2_x(ax, log2_values)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=legend)


def _sweep_runs(sweeps):
    """The runs of a list of sweeps ({value: run}), flattened."""
    return [r for g in sweeps for r in g.values()]


# What the panels' runs are, for the reasons of panels not drawn.
E_SWEEP_FS = "Scale runs with Feature Scaling in an e-sweep"
WITH_BASELINES = "runs of a collection with baselines (TopK/Gated/Switch)"


def _rows(runs):
    """The variants to draw, one row each: those present among the runs (both rows when there are none, so a
    placeholder figure still says what each would need)."""
    return R.compats_present(runs) or list(R.COMPATS)


def _heatmap(ax, rows, cols, values, title, fmt="{:.3g}", cmap="viridis", center_zero=False):
    """values: {(row, col): v}; rows/cols: ordered labels. NaN cells are gray."""
    m = np.full((len(rows), len(cols)), np.nan)
    for (r, c), v in values.items():
        m[rows.index(r), cols.index(c)] = v
    cm = matplotlib.colormaps[cmap].copy()
    cm.set_bad("0.85")
    kw = {}
    finite = m[np.isfinite(m)]
    if center_zero and finite.size:
        lim = max(abs(finite).max(), 1e-12)
        kw = dict(vmin=-lim, vmax=lim)
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, aspect="auto", **kw)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels([str(c) for c in cols])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([str(r) for r in rows])
    for i in range(len(rows)):
        for j in range(len(cols)):
            if math.isfinite(m[i, j]):
                rgb = cm(im.norm(m[i, j]))[:3]
                dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] < 0.5
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=7, color="w" if dark else "k")
    ax.set_title(title, fontsize=9)
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


ARCH_COLOR = {"topk": "tab:blue", "gated": "tab:green", "switch": "tab:red"}
SCALE_COLORS = ["tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]


def _series_points(runs, series_fn, x_fn, y_metric):
    """{series label: sorted [(x, y, n)]}: the mean of `y_metric` over runs landing on the same (series, x)."""
    out = {}
    pts = R.mean_by(runs, lambda r: (series_fn(r), x_fn(r)), lambda r: r.metric(y_metric))
    for (s, x), (y, n) in pts.items():
        if x is not None and math.isfinite(x):
            out.setdefault(s, []).append((x, y, n))
    return {s: sorted(v) for s, v in out.items()}


def _averaged_note(series, what):
    multi = sum(1 for pts in series.values() for p in pts if p[2] > 1)
    return [f"{what}: {multi} plotted points average more than one run (same configuration from several files)"] \
        if multi else []


def _label_e(runs):
    """Series label by e, with E added when the runs have several expert counts."""
    several_e = len({r.experts for r in runs}) > 1
    return (lambda r: f"E{r.experts} e={r.active}") if several_e else (lambda r: f"e={r.active}")


def _need_metric(runs, metric, what):
    have = [r for r in runs if r.has(metric)]
    if have:
        return have, None
    if not runs:
        return [], f"no {what}"
    return [], f"metric '{metric}' is in none of the {len(runs)} {what}"


def _plot_series(ax, series, style):
    """One line per series label; style(label, all labels) gives the line's matplotlib keywords."""
    for label in sorted(series, key=_natural):
        pts = series[label]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, label=label, **style(label, series))


def _line_panel(ax, have, label, x_fn, metric, style, title, xlabel, legend):
    """The mean `metric` of the runs against x_fn(run) on a log2 axis, one line per label(run); returns the series."""
    series = _series_points(have, label, x_fn, metric)
    _plot_series(ax, series, style)
    _finish(ax, title, xlabel, metric, [x_fn(r) for r in have], legend)
    return series


def _metric_rows(res, cand, panels, need, label_for, x_fn, style, xlabel, legend, w=4.2):
    """The layout Fig. 3, 4 and 10 share: one row per variant, one line panel per (metric, title, panel name) of
    `panels` (the variant's label is added to both), lines labelled by label_for(runs with the metric); `need` says
    which runs were looked for when none has the metric."""
    rows = _rows(cand)
    fig, axes = _figure(len(rows), len(panels), res.paper, w=w)
    for i, c in enumerate(rows):
        rc, lab = R.of_compat(cand, c), R.COMPAT_LABEL[c]
        for j, (metric, what, name) in enumerate(panels):
            ax, title, panel = axes[i][j], f"{what}\n{lab}", f"{name} ({lab})"
            have, why = _need_metric(rc, metric, need)
            if why:
                _not_drawn(res, ax, panel, title, why)
                continue
            series = _line_panel(ax, have, label_for(have), x_fn, metric, style, title, xlabel, legend)
            res.notes += _averaged_note(series, panel)
            res.ok(panel)
    return fig


def _natural(label):
    """Sort key that orders 'e=2' before 'e=16'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(label))]


# ---- Fig. 2: omega ---------------------------------------------------------------------------------------------------

def fig2_omega(runs, out_dir) -> FigureResult:
    """Fig. 2 (Section 2.2.2): the trained Feature Scaling factor omega against the number of active experts e, one
    line per k. Paper: omega converges to a positive value and grows with e. Runs: Scale SAEs with Feature Scaling on
    that belong to an e-sweep (same config except e); y = /final omega_mean, bars = min..max of the per-expert omega
    vector (Eq. 2.5 has one omega per expert)."""
    res = FigureResult("fig2_omega.png", "Fig. 2 (Sec. 2.2.2): omega vs active experts e")
    cand = _sweep_runs(R.e_sweeps(runs, fs_on=True))
    rows = _rows(cand)
    fig, axes = _figure(1, len(rows), res.paper)
    for ax, c in zip(axes[0], rows):
        title = f"{R.COMPAT_LABEL[c]}: mean omega over experts"
        panel = f"omega vs e ({R.COMPAT_LABEL[c]})"
        rc = R.of_compat(cand, c)
        have, why = _need_metric(rc, "omega_mean", E_SWEEP_FS)
        if why:
            _not_drawn(res, ax, panel, title, why)
            continue
        several_e = len({r.experts for r in have}) > 1
        label = (lambda r: f"k={r.k} E{r.experts}") if several_e else (lambda r: f"k={r.k}")
        series = _series_points(have, label, lambda r: float(r.active), "omega_mean")
        res.notes += _averaged_note(series, panel)
        for i, s in enumerate(sorted(series, key=_natural)):
            pts = series[s]
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            lo, hi = [], []
            for x, y, _ in pts:
                vecs = [r.vector("omega") for r in have
                        if label(r) == s and r.active == x and r.vector("omega") is not None]
                lo.append(y - min(v.min() for v in vecs) if vecs else 0.0)
                hi.append(max(v.max() for v in vecs) - y if vecs else 0.0)
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=s, color=f"C{i % 10}")
        ax.axhline(0, color="0.5", lw=0.8, ls=":")
        _finish(ax, title, "active experts e", "omega (bars: min..max over experts)", [r.active for r in have], 7)
        res.ok(panel)
    _save(fig, out_dir, res.file)
    return res


# ---- Fig. 3: FLOPS-matched comparison --------------------------------------------------------------------------------

FIG3_PANELS = (("a", "mse", "MSE, in domain (paper: OpenWebText)"),
               ("b", "mse_ood", "MSE, out of domain (paper: HLE-Biomedical)"),
               ("c", "loss_recovered_ood", "Loss Recovered, out of domain (paper: HLE)"),
               ("d", "loss_recovered", "Loss Recovered, in domain (paper's 3d is auto-interp)"))


def _lettered(panels):
    """(letter, metric, what) -> (metric, '(letter) what', '(letter) metric') for _metric_rows."""
    return [(metric, f"({p}) {what}", f"({p}) {metric}") for p, metric, what in panels]


def _arch_style(label, labels):
    """Baselines in fixed colours (dashed, squares); each Scale setting its own colour (solid, circles)."""
    for arch, color in ARCH_COLOR.items():
        if label.startswith(R.ARCH_LABEL[arch]):
            return dict(color=color, marker="s", ls="--")
    scale = sorted((l for l in labels if l.startswith(R.ARCH_LABEL["scale"])), key=_natural)
    return dict(color=SCALE_COLORS[scale.index(label) % len(SCALE_COLORS)], marker="o", ls="-")


def fig3_flops_matched(runs, out_dir) -> FigureResult:
    """Fig. 3 (Section 3.1): the FLOPS-matched comparison of Scale SAE with TopK, Gated and Switch SAE against L0:
    (a) MSE in domain, (b) MSE out of domain, (c) Loss Recovered out of domain; (d) here is Loss Recovered in domain
    (the paper's 3d, automated interpretability, is not measured by moesae). Runs: every collection holding a baseline,
    its baselines and its Scale SAEs with e >= 2 and Feature Scaling on. x = k (Gated: its measured L0)."""
    res = FigureResult("fig3_flops_matched.png", "Fig. 3 (Sec. 3.1): FLOPS-matched comparison vs L0")
    res.notes.append("Fig. 3d (automated interpretability) has no counterpart in the records; panel (d) shows "
                     "Loss Recovered in domain instead")
    fig = _metric_rows(res, R.fig3_runs(runs), _lettered(FIG3_PANELS), WITH_BASELINES,
                       label_for=lambda have: R.Run.setting, x_fn=lambda r: r.l0_axis, style=_arch_style,
                       xlabel="L0 (k; Gated: measured L0)", legend=6)
    _save(fig, out_dir, res.file)
    return res


# ---- Fig. 4: active experts ------------------------------------------------------------------------------------------

FIG4_PANELS = (("a", "mse", "MSE, in domain"), ("b", "mse_ood", "MSE, out of domain"),
               ("c", "loss_recovered", "Loss Recovered, in domain"),
               ("d", "loss_recovered_ood", "Loss Recovered, out of domain"))


def fig4_active_experts(runs, out_dir) -> FigureResult:
    """Fig. 4 (Section 3.2.1): MSE and Loss Recovered (in and out of domain) against L0, one line per number of
    active experts e. Paper: e = 1 is clearly worse, every e >= 2 is better and the e >= 2 curves cluster. Runs: Scale
    SAEs with Feature Scaling on that belong to an e-sweep."""
    res = FigureResult("fig4_active_experts.png",
                       "Fig. 4 (Sec. 3.2.1): Multiple Expert Activation, metrics vs L0 per e")
    fig = _metric_rows(res, _sweep_runs(R.e_sweeps(runs, fs_on=True)), _lettered(FIG4_PANELS), E_SWEEP_FS,
                       label_for=_label_e, x_fn=lambda r: float(r.k),
                       style=lambda s, _: dict(marker="o", ls="--" if s.endswith("e=1") else "-"),
                       xlabel="L0 (k)", legend=7)
    _save(fig, out_dir, res.file)
    return res


# ---- Fig. 5: Feature Scaling on/off ----------------------------------------------------------------------------------

# The slices the paper shows (Fig. 5a at L0 in {2, 32}; 5b at e in {8, 16}); others are used when these are absent.
FIG5_L0 = (2, 32)
FIG5_E = (8, 16)


def _pick(wanted, present, n=2, largest=False):
    """The paper's slice values when the records have them, else n values of the records (the smallest and the
    largest; or the largest n)."""
    present = sorted(set(present))
    got = [v for v in wanted if v in present]
    if len(got) == len(wanted) or not present:
        return got
    if largest:
        return present[-n:]
    return sorted({present[0], present[-1]})


def fig5_feature_scaling(runs, out_dir) -> FigureResult:
    """Fig. 5 (Section 3.2.2): Feature Scaling on (solid) vs off (dashed). (a) MSE and Loss Recovered against e at
    fixed L0 (paper: L0 = 2 and 32); (b) the same against L0 at fixed e (paper: e = 8 and 16). Runs: pairs of Scale
    runs identical except feature_scaling mean (A*mean under compat: reference) vs none."""
    res = FigureResult("fig5_feature_scaling.png", "Fig. 5 (Sec. 3.2.2): Feature Scaling on (solid) vs off (dashed)")
    pairs = R.fs_pairs(runs)
    cand = [r for p in pairs for r in p]
    rows = _rows(cand)
    layout = (("a", "mse", "e"), ("a", "loss_recovered", "e"), ("b", "mse", "k"), ("b", "loss_recovered", "k"))
    fig, axes = _figure(len(rows), len(layout), res.paper)
    for i, c in enumerate(rows):
        rc = R.of_compat(cand, c)
        ks = _pick(FIG5_L0, [r.k for r in rc])
        es = _pick(FIG5_E, [r.active for r in rc], largest=True)
        if rc and ks != list(FIG5_L0):
            res.notes.append(f"{R.COMPAT_LABEL[c]}: Fig. 5a drawn at L0 {ks} (paper: {list(FIG5_L0)}, not all in "
                             "the records)")
        if rc and es != list(FIG5_E):
            res.notes.append(f"{R.COMPAT_LABEL[c]}: Fig. 5b drawn at e {es} (paper: {list(FIG5_E)}, not all in "
                             "the records)")
        for j, (p, metric, axis) in enumerate(layout):
            ax = axes[i][j]
            fixed = ks if axis == "e" else es
            title = (f"({p}) {metric} vs e at L0 {fixed}" if axis == "e" else f"({p}) {metric} vs L0 at e {fixed}") \
                + f"\n{R.COMPAT_LABEL[c]}"
            panel = f"({p}) {metric} vs {'e' if axis == 'e' else 'L0'} ({R.COMPAT_LABEL[c]})"
            have, why = _need_metric(rc, metric, "Scale runs in Feature Scaling on/off pairs")
            if why:
                _not_drawn(res, ax, panel, title, why)
                continue
            for n, v in enumerate(fixed):
                for on in (True, False):
                    sub = [r for r in have if r.fs_on == on and (r.k == v if axis == "e" else r.active == v)]
                    pts = R.mean_by(sub, lambda r: float(r.active if axis == "e" else r.k), lambda r: r.metric(metric))
                    if not pts:
                        continue
                    xs = sorted(pts)
                    ax.plot(xs, [pts[x][0] for x in xs], color=f"C{n}", marker="o", ls="-" if on else "--",
                            label=f"{'L0' if axis == 'e' else 'e'}={v} {'with' if on else 'without'} FS")
            _finish(ax, title, "active experts e" if axis == "e" else "L0 (k)", metric,
                    [r.active if axis == "e" else r.k for r in have], 6)
            res.ok(panel)
    _save(fig, out_dir, res.file)
    return res


# ---- Fig. 6: specialization ------------------------------------------------------------------------------------------

FIG6_L0 = (16, 32)


def fig6_specialization(runs, out_dir) -> FigureResult:
    """Fig. 6 (Section 3.3.1): (a) intra-expert vs inter-expert feature redundancy against e (paper: e >= 2 high
    intra, low inter; e = 1 high everywhere), from /final intra_expert_redundancy and inter_expert_redundancy;
    (b) the CDF of expert activations, experts sorted by count (paper: e = 1 flat, e >= 2 steep), from the
    specialization_cdf vector (fallback: expert_fraction, labelled). Runs: Scale SAEs with Feature Scaling on in an
    e-sweep; (b) at L0 16 (else 32, else the median k)."""
    res = FigureResult("fig6_specialization.png", "Fig. 6 (Sec. 3.3.1): expert specialization")
    cand = _sweep_runs(R.e_sweeps(runs, fs_on=True))
    rows = _rows(cand)
    fig, axes = _figure(len(rows), 2, res.paper, w=5)
    for i, c in enumerate(rows):
        rc = R.of_compat(cand, c)
        # (a) intra vs inter
        ax = axes[i][0]
        title = f"(a) intra- (solid) vs inter-expert (dashed) redundancy\n{R.COMPAT_LABEL[c]}"
        panel = f"(a) intra vs inter ({R.COMPAT_LABEL[c]})"
        intra, why_a = _need_metric(rc, "intra_expert_redundancy", E_SWEEP_FS)
        inter, why_b = _need_metric(rc, "inter_expert_redundancy", E_SWEEP_FS)
        if why_a and why_b:
            _not_drawn(res, ax, panel, title, why_a if why_a == why_b else f"{why_a}; {why_b}")
        else:
            for metric, runs_m, ls in (("intra_expert_redundancy", intra, "-"),
                                       ("inter_expert_redundancy", inter, "--")):
                series = _series_points(runs_m, lambda r: f"k={r.k}", lambda r: float(r.active), metric)
                for s in sorted(series, key=_natural):
                    color = f"C{sorted({r.k for r in rc}).index(int(s[2:])) % 10}"
                    ax.plot([p[0] for p in series[s]], [p[1] for p in series[s]], ls=ls, marker="o", color=color,
                            label=s if ls == "-" or not intra else None)
            _finish(ax, title, "active experts e", "fraction of latents with a near-duplicate",
                    [r.active for r in rc], 7)
            if why_a or why_b:
                res.partly(panel, why_a or why_b)
                ax.text(0.02, 0.98, "missing: " + _wrap(why_a or why_b, 50), transform=ax.transAxes, va="top",
                        fontsize=6, color="0.4")
            else:
                res.ok(panel)
        # (b) CDF
        ax = axes[i][1]
        panel = f"(b) expert activation CDF ({R.COMPAT_LABEL[c]})"
        curves = [(r, *R.specialization_curve(r)) for r in rc]
        curves = [t for t in curves if t[1] is not None]
        if not curves:
            why = "no Scale runs with Feature Scaling in an e-sweep" if not rc else \
                f"neither 'specialization_cdf' nor 'expert_fraction' in the {len(rc)} candidate runs"
            _not_drawn(res, ax, panel, f"(b) expert activation CDF\n{R.COMPAT_LABEL[c]}", why)
            continue
        ks = sorted({r.k for r, _, _ in curves})
        k = next((v for v in FIG6_L0 if v in ks), ks[len(ks) // 2])
        sources = sorted({s for r, _, s in curves if r.k == k})
        for r, v, s in sorted((t for t in curves if t[0].k == k), key=lambda t: (t[0].experts, t[0].active)):
            x = np.arange(1, len(v) + 1) / len(v)
            ax.plot(x, v, label=f"E{r.experts} e={r.active}", ls="--" if r.active == 1 else "-")
        src = " + ".join(sources)
        ax.set_title(f"(b) CDF of expert activations, L0={k}\n{R.COMPAT_LABEL[c]} (from {src})", fontsize=9)
        ax.set_xlabel("experts, sorted by activation count (fraction)")
        ax.set_ylabel("cumulative share of activations")
        ax.legend(fontsize=7)
        if "specialization_cdf" not in sources:
            res.partly(panel, "'specialization_cdf' absent; curve from 'expert_fraction' (routing share on "
                              "held-out tokens, not the paper's past-tense verbs)")
        else:
            res.ok(panel)
    _save(fig, out_dir, res.file)
    return res


# ---- Fig. 7: activation similarity -----------------------------------------------------------------------------------

def _pair_table(pairs, metric, value_fn):
    """{((E, e) label, k): value_fn(on, off)} over the FS pairs whose runs both have `metric` (mean over duplicates)."""
    acc = {}
    for on, off in pairs:
        if on.has(metric) and off.has(metric):
            v = value_fn(on.metric(metric), off.metric(metric))
            if math.isfinite(v):
                acc.setdefault((on.experts, on.active, on.k), []).append(v)
    return {key: float(np.mean(v)) for key, v in acc.items()}


def _heat_axes(table):
    several_e = len({key[0] for key in table}) > 1
    row = (lambda E, e: f"E{E} e={e}") if several_e else (lambda E, e: f"e={e}")
    rows = [row(E, e) for E, e in sorted({(key[0], key[1]) for key in table})]
    cols = sorted({key[2] for key in table})
    values = {(row(E, e), k): v for (E, e, k), v in table.items()}
    return rows, cols, values


def _heat_panel(ax, table, title, **kw):
    """A heat map of {(E, e, k): value} over e (rows) x L0 (columns)."""
    rows, cols, values = _heat_axes(table)
    _heatmap(ax, rows, cols, values, title, **kw)
    ax.set_xlabel("L0 (k)")
    ax.set_ylabel("active experts")


def _reduction_pct(on, off):
    return 100.0 * (1.0 - on / off) if off != 0 else math.nan


def fig7_activation_similarity(runs, out_dir) -> FigureResult:
    """Fig. 7 (Section 3.3.2, Appendix A.4): (a) the percentage reduction in average neuron activation similarity
    (Eq. A.3) due to Feature Scaling, heat map over e (rows) x L0 (columns), positive = less similar with FS;
    (b) the similarity without Feature Scaling. From /final activation_similarity_verbs (the paper's verb tokens) of
    Feature Scaling on/off pairs, or activation_similarity (all held-out tokens) when the records lack the former."""
    res = FigureResult("fig7_activation_similarity.png",
                       "Fig. 7 (Sec. 3.3.2): activation similarity and Feature Scaling")
    pairs = R.fs_pairs(runs)
    metric = R.preferred_metric(pairs, R.ACTIVATION_SIMILARITY, R.has_scalar)
    res.notes.append(f"from '{metric}' ({R.TOKEN_SET[metric]})")
    rows = _rows([r for p in pairs for r in p])
    fig, axes = _figure(len(rows), 2, res.paper + f"\n({metric}: {R.TOKEN_SET[metric]})", w=5)
    for i, c in enumerate(rows):
        pc = [p for p in pairs if p[0].compat == c]
        red = _pair_table(pc, metric, _reduction_pct)
        base = _pair_table(pc, metric, lambda on, off: off)
        panels = ((red, "(a) reduction by FS", "(a) % reduction in activation similarity by FS",
                   dict(fmt="{:.1f}", cmap="RdBu", center_zero=True)),
                  (base, "(b) without FS", "(b) activation similarity without FS", dict(fmt="{:.3f}")))
        for j, (table, name, what, kw) in enumerate(panels):
            ax = axes[i][j]
            title = f"{what}\n{R.COMPAT_LABEL[c]}"
            panel = f"{name} ({R.COMPAT_LABEL[c]})"
            if not table:
                why = ("no Feature Scaling on/off pairs of Scale runs" if not pc else
                       f"metric '{metric}' (or '{R.ACTIVATION_SIMILARITY[0]}') is missing from the {len(pc)} "
                       "Feature Scaling on/off pairs")
                _not_drawn(res, ax, panel, title, why)
                continue
            _heat_panel(ax, table, title, **kw)
            res.ok(panel)
    _save(fig, out_dir, res.file)
    return res


# ---- Fig. 8: feature redundancy --------------------------------------------------------------------------------------

FIG8_L0 = (16, 32)


def fig8_redundancy(runs, out_dir) -> FigureResult:
    """Fig. 8 (Section 3.4): feature redundancy = fraction of latents whose max decoder cosine to another latent
    exceeds the threshold (0.9; 0.8 under compat: reference). (a) without Feature Scaling, heat map over e x L0
    (Scale e-sweeps with FS off); (b) with vs without FS at two L0 (paper: L0 = 16 among them), bars over e, annotated
    with the % reduction; (c) (the abstract's 99% claim) redundancy against L0 per architecture of the FLOPS-matched
    runs."""
    res = FigureResult("fig8_redundancy.png", "Fig. 8 (Sec. 3.4): feature redundancy (decoder cosine > threshold)")
    off_sweeps = _sweep_runs(R.e_sweeps(runs, fs_on=False))
    pairs = R.fs_pairs(runs)
    f3 = R.fig3_runs(runs)
    rows = _rows(off_sweeps + [r for p in pairs for r in p] + f3)
    fig, axes = _figure(len(rows), 3, res.paper, w=5)
    for i, c in enumerate(rows):
        lab = R.COMPAT_LABEL[c]
        # (a)
        ax = axes[i][0]
        title, panel = f"(a) redundancy without FS\n{lab}", f"(a) heat map ({lab})"
        rc, why = _need_metric(R.of_compat(off_sweeps, c), "redundancy",
                               "Scale runs without Feature Scaling in an e-sweep")
        if why:
            _not_drawn(res, ax, panel, title, why)
        else:
            cells = R.mean_by(rc, lambda r: (r.experts, r.active, r.k), lambda r: r.metric("redundancy"))
            _heat_panel(ax, {key: v for key, (v, _) in cells.items()}, title, fmt="{:.3f}", cmap="viridis")
            res.ok(panel)
        # (b)
        ax = axes[i][1]
        pc = [p for p in pairs if p[0].compat == c and p[0].has("redundancy") and p[1].has("redundancy")]
        ks = _pick(FIG8_L0, [p[0].k for p in pc])
        title, panel = f"(b) redundancy with (solid) / without (hatched) FS, L0 {ks}\n{lab}", f"(b) FS bars ({lab})"
        if not pc:
            _not_drawn(res, ax, panel, title, "no Feature Scaling on/off pairs of Scale runs with 'redundancy'")
        else:
            es = sorted({p[0].active for p in pc})
            width = 0.8 / (2 * len(ks))
            for n, k in enumerate(ks):
                at_k = [p for p in pc if p[0].k == k]
                for m, on in enumerate((True, False)):
                    vals = R.mean_by([p[0 if on else 1] for p in at_k], lambda r: r.active,
                                     lambda r: r.metric("redundancy"))
                    xs = [es.index(e) + (2 * n + m) * width - 0.4 + width / 2 for e in sorted(vals)]
                    ax.bar(xs, [vals[e][0] for e in sorted(vals)], width, color=f"C{n}", hatch=None if on else "//",
                           alpha=1.0 if on else 0.45, label=f"L0={k} {'with' if on else 'without'} FS")
                # label each pair of bars with the reduction by FS (mean over several E at one e)
                red = R.mean_by(at_k, lambda p: p[0].active, lambda p: _reduction_pct(p[0].metric("redundancy"),
                                                                                       p[1].metric("redundancy")))
                top = R.mean_by(at_k, lambda p: p[0].active, lambda p: max(p[0].metric("redundancy"),
                                                                          p[1].metric("redundancy")))
                for e, (v, _) in red.items():
                    ax.annotate(f"{v:.0f}%", (es.index(e) + 2 * n * width - 0.4 + width, top[e][0]), fontsize=6,
                                ha="center", va="bottom", color="0.2")
            ax.set_xticks(range(len(es)))
            ax.set_xticklabels([f"e={e}" for e in es])
            ax.set_ylabel("redundancy (labels: % reduction by FS)")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6)
            res.ok(panel)
        # (c)
        ax = axes[i][2]
        title, panel = f"(c) redundancy vs L0 by architecture\n{lab}", f"(c) by architecture ({lab})"
        have, why = _need_metric(R.of_compat(f3, c), "redundancy", WITH_BASELINES)
        if why:
            _not_drawn(res, ax, panel, title, why)
        else:
            _line_panel(ax, have, R.Run.setting, lambda r: r.l0_axis, "redundancy", _arch_style, title,
                        "L0 (k; Gated: measured L0)", 6)
            res.ok(panel)
    _save(fig, out_dir, res.file)
    return res


# ---- Appendix C, Fig. 10: decomposition methods ----------------------------------------------------------------------

def _label_method(runs):
    """Series label by Feature Scaling method, with E and e added when the runs have several (E, e)."""
    several = len({(r.experts, r.active) for r in runs}) > 1
    return (lambda r: f"{R.FS_METHOD_LABEL.get(r.fs, r.fs)} (E{r.experts} e{r.active})") if several else \
        (lambda r: R.FS_METHOD_LABEL.get(r.fs, r.fs))


def figC_decomposition(runs, out_dir) -> FigureResult:
    """Appendix C, Fig. 10: MSE against L0 for the Feature Scaling low-pass methods -- Method 0 mean (Eq. C.1; the
    reference code's A*mean under compat: reference), Method 1 identity (C.2), Method 2 learned A_LP (C.3). Paper:
    identity is always clearly worse; mean and learned are close. Runs: Scale runs identical except the method, where
    identity or learned is present (other methods in the same sweep, e.g. none, are drawn too)."""
    res = FigureResult("figC_decomposition.png", "Appendix C, Fig. 10: Feature Scaling decomposition methods")
    panels = [(metric, f"{what} per decomposition method", metric)
              for metric, what in (("mse", "MSE"), ("loss_recovered", "Loss Recovered, in domain"))]
    fig = _metric_rows(res, _sweep_runs(R.decomposition_sweeps(runs)), panels,
                       "Scale runs of a decomposition sweep (identity/learned)", label_for=_label_method,
                       x_fn=lambda r: float(r.k),
                       style=lambda s, _: dict(marker="o", ls=":" if s.startswith("no ") else "-"),
                       xlabel="L0 (k)", legend=7, w=5)
    _save(fig, out_dir, res.file)
    return res


# ---- Appendix D, Fig. 11: overlap distributions ----------------------------------------------------------------------

def figD_overlaps(runs, out_dir) -> FigureResult:
    """Appendix D, Fig. 11: distributions of the number of overlapping active latents k_ij between token pairs, with
    (solid) and without (dashed) Feature Scaling, one panel per (e, L0); paper defaults and compat: reference in two
    colours. Paper: bimodal (a mode at 0 and a secondary one); FS shifts the secondary mode to the right. From the
    /final overlap_histogram_verbs vectors (verb tokens, as the paper) of Feature Scaling on/off pairs, or
    overlap_histogram (all held-out tokens) when the records lack them."""
    res = FigureResult("figD_overlaps.png", "Appendix D, Fig. 11: overlap distributions of active latents")
    pairs = R.fs_pairs(runs)
    name = R.preferred_metric(pairs, R.OVERLAP_HISTOGRAM, R.has_vector)
    usable = [(on, off) for on, off in pairs
              if R.overlap_distribution(on, name) is not None and R.overlap_distribution(off, name) is not None]
    panel = "overlap histograms"
    if not usable:
        why = ("no Feature Scaling on/off pairs of Scale runs" if not pairs else
               f"vector '{name}' (or '{R.OVERLAP_HISTOGRAM[0]}') is missing from the {len(pairs)} Feature Scaling "
               "on/off pairs")
        fig, axes = _figure(1, 1, res.paper, w=6)
        _not_drawn(res, axes[0][0], panel, "overlap distributions", why)
        _save(fig, out_dir, res.file)
        return res
    res.notes.append(f"from '{name}' ({R.TOKEN_SET[name]})")
    es = sorted({p[0].active for p in usable})
    ks = sorted({p[0].k for p in usable})
    fig, axes = _figure(len(es), len(ks), res.paper + f"\n({name}: {R.TOKEN_SET[name]})", w=3.2, h=2.5)
    for i, e in enumerate(es):
        for j, k in enumerate(ks):
            ax = axes[i][j]
            sel = [p for p in usable if p[0].active == e and p[0].k == k]
            if not sel:
                _unavailable(ax, f"e={e}, L0={k}", "no pair at this point")
                continue
            for on, off in sel:
                color = "C0" if on.compat == "paper" else "C1"
                for run, ls, tag in ((on, "-", "with FS"), (off, "--", "without FS")):
                    d = R.overlap_distribution(run, name)
                    ax.plot(np.arange(len(d)), d, ls=ls, color=color, marker=".",
                            label=f"{R.COMPAT_LABEL[run.compat]} {tag}")
            ax.set_title(f"e={e}, L0={k}", fontsize=8)
            ax.set_xlabel("shared active latents k_ij", fontsize=7)
            ax.set_ylabel("share of token pairs", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if i == 0 and j == 0:
                ax.legend(fontsize=5)
    res.ok(panel)
    _save(fig, out_dir, res.file)
    return res


ALL_FIGURES = (fig2_omega, fig3_flops_matched, fig4_active_experts, fig5_feature_scaling, fig6_specialization,
               fig7_activation_similarity, fig8_redundancy, figC_decomposition, figD_overlaps)


def make_all(runs, out_dir, log=print):
    """Draws every figure into out_dir; logs one line per figure and per panel that could not be drawn."""
    pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
    for c in R.COMPATS:
        if not R.of_compat(runs, c):
            log(f"no run with model.compat: {c} in the inputs: the figures show the other variant only")
    results = []
    for fn in ALL_FIGURES:
        res = fn(runs, out_dir)
        results.append(res)
        log(f"{res.file}: {res.status} ({res.count(DRAWN)} of {len(res.panels)} panels complete, "
            f"{res.count(PARTLY)} partly drawn)")
        for panels, why in res.missing_grouped():
            log(f"  {res.file}: panel{'s' if len(panels) > 1 else ''} {', '.join(panels)}: {why}")
        for n in res.notes:
            log(f"  {res.file}: note: {n}")
    return results
