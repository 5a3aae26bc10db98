"""The paper's quantitative claims, measured from collected runs, and claims.md.

Each claim names the paper's section, figure and number. `measure_all` evaluates every claim twice, on the runs with
the paper defaults (model.compat: paper) and on those with the reference code's choices (compat: reference), and
returns a `Measurement` per variant: the measured value (and how many runs or points it rests on) and a verdict:

    holds                    the effect has the paper's sign and at least MAGNITUDE_SHARE of the paper's size
                             (for "always"/"every" claims: true at every point measured)
    holds in direction only  same sign as the paper, smaller than MAGNITUDE_SHARE of its number
    partly holds             true at some of the points measured, or one part of a two-part claim
    does not hold            the opposite sign, or true at none (or too few) of the points
    not measurable           the records lack the runs or the metric; the reason names what is missing

Percentages: "MSE reduction" is 100 (1 - MSE_new / MSE_old), averaged over the points (L0 values) named;
"Loss Recovered improvement" is 100 (LR_new / LR_old - 1), as the paper's 1.75 % and 4.132 % are (see
reference-implementations.md 3.9, where they are recomputed from the plotted data). MSE ratios do not depend on
whether the MSE is averaged or summed over d.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import records as R

HOLDS, DIRECTION, PARTLY, FAILS, NA = ("holds", "holds in direction only", "partly holds", "does not hold",
                                       "not measurable")
MAGNITUDE_SHARE = 0.9   # "holds" needs at least 90 % of the paper's number
MOST = 0.75             # "nearly all" / "most settings" = at least 75 % of the points


@dataclass
class Measurement:
    verdict: str
    value: str                                    # what was measured, with counts (Markdown, one line)
    numbers: dict = field(default_factory=dict)   # the same numbers, machine-readable (report.json)


def not_measurable(reason: str) -> Measurement:
    return Measurement(NA, reason)


@dataclass
class Claim:
    id: str
    where: str          # paper section / figure
    text: str           # the claim in the paper's words
    paper: str          # the paper's number(s)
    how: str            # how it is measured from the records
    measure: Callable   # (runs of one compat) -> Measurement


# ---- small helpers ---------------------------------------------------------------------------------------------------

def _pct(x):
    return f"{x:.2f}%"


def _reduction(new, old):
    return 100.0 * (1.0 - new / old) if old != 0 else math.nan


def _improvement(new, old):
    return 100.0 * (new / old - 1.0) if old != 0 else math.nan


def _with(pairs, metric):
    """The run pairs where both runs have `metric`."""
    return [(a, b) for a, b in pairs if a.has(metric) and b.has(metric)]


def _mean_change(pairs, metric, change):
    """Mean over (new, old) run pairs of change(new, old) (_reduction or _improvement) of `metric`."""
    return float(np.mean([change(new.metric(metric), old.metric(metric)) for new, old in pairs]))


def _informative(pairs, metric):
    """The run pairs whose `metric` is not 0 in both runs (see _both_zero)."""
    return [(a, b) for a, b in pairs if not _both_zero(a.metric(metric), b.metric(metric))]


def _magnitude(measured, paper):
    if not math.isfinite(measured):
        return NA
    if measured >= MAGNITUDE_SHARE * paper:
        return HOLDS
    return DIRECTION if measured > 0 else FAILS


def _share(wins, n, need="all"):
    """Verdict for "at every point" (need='all') or "nearly all points" (need='most') claims."""
    if n == 0:
        return NA
    if wins == n or (need == "most" and wins >= MOST * n):
        return HOLDS
    return PARTLY if wins > 0 else FAILS


def _combine(verdicts):
    """One verdict for a claim made of parts (unmeasurable parts are left out)."""
    v = [x for x in verdicts if x != NA]
    if not v:
        return NA
    if all(x == HOLDS for x in v):
        return HOLDS
    if all(x in (HOLDS, DIRECTION) for x in v):
        return DIRECTION
    return FAILS if all(x == FAILS for x in v) else PARTLY


def _ks(points):
    return ", ".join(str(k) for k in sorted(set(points)))


def _fig3_missing(runs, metric, need_switch=False):
    """Why a Fig. 3 comparison cannot be made from these runs (None when it can)."""
    f3 = R.fig3_runs(runs)
    if not f3:
        return "no collection with baselines (TopK/Gated/Switch), e.g. a fig3-flops-matched grid"
    if not any(R.is_paper_scale(r) for r in f3):
        return "no Scale SAE run (e >= 2, Feature Scaling on) beside the baselines"
    if need_switch and not any(r.arch == "switch" for r in f3):
        return "no Switch SAE run beside the Scale SAE runs"
    if not any(r.has(metric) for r in f3 if R.is_paper_scale(r)):
        return f"metric '{metric}' is in none of the Scale runs of the FLOPS-matched comparison"
    return None


def _best(runs, metric, arches=None, scale=False, lowest=True):
    """(value, run) of the best run for `metric` (lowest, or highest with lowest=False) among the given archs or the
    paper's Scale SAEs."""
    sel = [r for r in runs if r.has(metric) and (R.is_paper_scale(r) if scale else r.arch in arches)]
    if not sel:
        return math.nan, None
    r = (min if lowest else max)(sel, key=lambda r: r.metric(metric))
    return r.metric(metric), r


# ---- Fig. 3 / abstract: Scale vs the other SAEs ----------------------------------------------------------------------

def c_vs_switch(runs):
    why = _fig3_missing(runs, "mse", need_switch=True)
    if why:
        return not_measurable(why)
    per_setting = defaultdict(list)
    for g in R.by_condition(runs).values():
        sw, _ = _best(g, "mse", arches=("switch",))
        if not math.isfinite(sw):
            continue
        for r in g:
            if R.is_paper_scale(r) and r.has("mse"):
                per_setting[r.setting()].append((r.k, _reduction(r.metric("mse"), sw)))
    if not per_setting:
        return not_measurable("no L0 with both a Switch and a Scale SAE run with 'mse'")
    means = {s: float(np.mean([v for _, v in pts])) for s, pts in per_setting.items()}
    overall = float(np.mean(list(means.values())))
    detail = "; ".join(f"{s}: {_pct(m)} over k = {_ks(k for k, _ in per_setting[s])}"
                       for s, m in sorted(means.items()))
    return Measurement(_magnitude(overall, 24.0),
                       f"mean MSE reduction {_pct(overall)} vs the best Switch SAE ({detail})",
                       {"mean_reduction_pct": overall, "per_setting_pct": means,
                        "points": {s: dict(p) for s, p in per_setting.items()}})


FIG3_NUMBERS = {32: 37.21, 64: 41.99, 128: 42.54}


def c_next_best(runs):
    why = _fig3_missing(runs, "mse")
    if why:
        return not_measurable(why)
    groups = R.by_condition(runs)
    parts, verdicts, numbers, absent = [], [], {}, []
    for k, paper in FIG3_NUMBERS.items():
        at_k = [g for g in groups.values() if g[0].k == k]
        reds = []
        for g in at_k:
            s, sr = _best(g, "mse", scale=True)
            b, br = _best(g, "mse", arches=("topk", "switch"))
            if sr and br:
                reds.append((_reduction(s, b), sr.setting(), br.setting()))
        if not reds:
            absent.append(k)
            continue
        red = float(np.mean([x[0] for x in reds]))
        numbers[k] = red
        verdicts.append(_magnitude(red, paper))
        parts.append(f"L0 {k}: {_pct(red)} ({reds[0][1]} vs {reds[0][2]})")
    if not parts:
        ks = sorted({g[0].k for g in groups.values()})
        return not_measurable(f"no runs at L0 {', '.join(map(str, FIG3_NUMBERS))} with a Scale SAE and a TopK/Switch "
                              f"baseline (the records have k = {_ks(ks)})")
    if absent:
        parts.append(f"L0 {', '.join(map(str, absent))}: no runs")
    return Measurement(_combine(verdicts), "; ".join(parts), {"reduction_pct_by_l0": numbers})


def _lowest_at_every_l0(runs, metric, need):
    why = _fig3_missing(runs, metric)
    if why:
        return not_measurable(why)
    wins, lost, n = [], [], 0
    for g in R.by_condition(runs).values():
        s, _ = _best(g, metric, scale=True)
        b, br = _best(g, metric, arches=("topk", "switch"))
        if not (math.isfinite(s) and math.isfinite(b)):
            continue
        n += 1
        (wins if s < b else lost).append(g[0].k)
    if n == 0:
        return not_measurable(f"no L0 with a Scale SAE and a TopK/Switch baseline that both have '{metric}'")
    text = f"Scale SAE lowest {metric} at {len(wins)} of {n} L0 points"
    if lost:
        text += f" (not at k = {_ks(lost)})"
    return Measurement(_share(len(wins), n, need), text, {"wins": len(wins), "points": n, "lost_k": sorted(lost)})


def c_lowest_mse(runs):
    return _lowest_at_every_l0(runs, "mse", "all")


def c_lowest_mse_ood(runs):
    return _lowest_at_every_l0(runs, "mse_ood", "most")


def c_lr_ood_vs_topk(runs):
    why = _fig3_missing(runs, "loss_recovered_ood")
    if why:
        return not_measurable(why)
    hi, lo = [], []
    for g in R.by_condition(runs).values():
        s, _ = _best(g, "loss_recovered_ood", scale=True, lowest=False)
        t, _ = _best(g, "loss_recovered_ood", arches=("topk",), lowest=False)
        if math.isfinite(s) and math.isfinite(t):
            (hi if g[0].k >= 8 else lo).append((g[0].k, s - t))
    if not hi:
        return not_measurable("no L0 >= 8 with both a Scale SAE and a TopK SAE that have 'loss_recovered_ood'")
    wins = [k for k, d in hi if d >= 0]
    text = (f"best Scale >= TopK at {len(wins)} of {len(hi)} L0 >= 8 points (mean difference "
            f"{np.mean([d for _, d in hi]):+.4f})")
    if lo:
        text += f"; at L0 <= 4 the mean difference is {np.mean([d for _, d in lo]):+.4f}"
    return Measurement(_share(len(wins), len(hi)), text, {"wins": len(wins), "points": len(hi)})


def c_redundancy_vs_switch(runs):
    why = _fig3_missing(runs, "redundancy", need_switch=True)
    if why:
        return not_measurable(why)
    per_setting = defaultdict(lambda: ([], []))
    for g in R.by_condition(runs).values():
        sw = [r.metric("redundancy") for r in g if r.arch == "switch" and r.has("redundancy")]
        if not sw:
            continue
        for r in g:
            if R.is_paper_scale(r) and r.has("redundancy"):
                per_setting[r.setting()][0].append(r.metric("redundancy"))
                per_setting[r.setting()][1].append(float(np.mean(sw)))
    if not per_setting:
        return not_measurable("no L0 with both a Switch and a Scale SAE run with 'redundancy'")
    reds, parts = {}, []
    for s, (sc, sw) in sorted(per_setting.items()):
        parts.append(f"{s}: {np.mean(sc):.4f} vs Switch {np.mean(sw):.4f}")
        if np.mean(sw) > 0:
            reds[s] = _reduction(float(np.mean(sc)), float(np.mean(sw)))
    if not reds:
        return not_measurable("the Switch SAE runs have no redundant latents (redundancy 0), so a reduction is "
                              "undefined (" + "; ".join(parts) + ")")
    overall = float(np.mean(list(reds.values())))
    return Measurement(_magnitude(overall, 99.0),
                       f"redundancy reduction {_pct(overall)} (mean over settings of 1 - mean Scale / mean Switch; "
                       + "; ".join(parts) + ")", {"reduction_pct": overall, "per_setting_pct": reds})


# ---- Fig. 4: Multiple Expert Activation ------------------------------------------------------------------------------

def _e_pairs(runs, fs_on, metric):
    """(e=1 run, e>=2 run) pairs from e-sweeps where both have `metric`."""
    return _e_pairs_where(runs, fs_on, lambda r: r.has(metric))


def _e_pairs_where(runs, fs_on, usable):
    """(e=1 run, e>=2 run) pairs from e-sweeps where both runs are usable(run)."""
    pairs = []
    for g in R.e_sweeps(runs, fs_on=fs_on):
        one = g.get(1)
        if one is None or not usable(one):
            continue
        pairs += [(one, r) for e, r in g.items() if e >= 2 and usable(r)]
    return pairs


def _e_sweep_missing(runs, fs_on, metric, what):
    sw = R.e_sweeps(runs, fs_on=fs_on)
    if not sw:
        return f"no e-sweep of Scale runs {what} (runs identical except active_experts)"
    if not any(1 in g for g in sw):
        return "the e-sweeps have no e = 1 run"
    return f"metric '{metric}' is missing from the e = 1 / e >= 2 runs of the e-sweeps"


def c_multi_expert(runs):
    pairs = _e_pairs(runs, True, "mse")
    if not pairs:
        return not_measurable(_e_sweep_missing(runs, True, "mse", "with Feature Scaling"))
    wins = [(one, r) for one, r in pairs if r.metric("mse") < one.metric("mse")]
    lost = sorted({(r.active, r.k) for one, r in pairs if r.metric("mse") >= one.metric("mse")})
    red = _mean_change([(r, one) for one, r in pairs], "mse", _reduction)
    text = f"e >= 2 lower MSE than e = 1 in {len(wins)} of {len(pairs)} (e, L0) points, mean MSE reduction {_pct(red)}"
    if lost:
        text += " (not at " + ", ".join(f"e={e} k={k}" for e, k in lost) + ")"
    return Measurement(_share(len(wins), len(pairs)), text,
                       {"wins": len(wins), "points": len(pairs), "mean_reduction_pct": red})


# ---- Fig. 5: Feature Scaling -----------------------------------------------------------------------------------------

def _fs_pairs_with(runs, metric):
    return _with(R.fs_pairs(runs), metric)


def _fs_missing(runs, metric, where=""):
    pairs = R.fs_pairs(runs)
    if not pairs:
        return "no Feature Scaling on/off pairs (Scale runs identical except feature_scaling mean vs none)"
    if where:
        return where
    return f"metric '{metric}' is missing from the {len(pairs)} Feature Scaling on/off pairs"


def c_fs_overall(runs):
    pairs = _fs_pairs_with(runs, "mse")
    if not pairs:
        return not_measurable(_fs_missing(runs, "mse"))
    wins = sum(on.metric("mse") < off.metric("mse") for on, off in pairs)
    red = _mean_change(pairs, "mse", _reduction)
    text = f"FS lowers MSE in {wins} of {len(pairs)} pairs (mean reduction {_pct(red)})"
    verdicts = [_share(wins, len(pairs), "most")]
    numbers = {"mse_wins": wins, "mse_pairs": len(pairs), "mean_mse_reduction_pct": red}
    lr = _fs_pairs_with(runs, "loss_recovered")
    if lr:
        lw = sum(on.metric("loss_recovered") > off.metric("loss_recovered") for on, off in lr)
        text += f"; raises Loss Recovered in {lw} of {len(lr)} pairs"
        verdicts.append(_share(lw, len(lr), "most"))
        numbers.update(lr_wins=lw, lr_pairs=len(lr))
    else:
        text += "; Loss Recovered not in the records"
    return Measurement(_combine(verdicts), text, numbers)


def c_fs_e16(runs):
    e = 16
    pairs = [(on, off) for on, off in _fs_pairs_with(runs, "mse") if on.active == e]
    if not pairs:
        present = sorted({on.active for on, _ in R.fs_pairs(runs)})
        return not_measurable(_fs_missing(runs, "mse", f"no Feature Scaling on/off pair at e = {e}"
                                          + (f" (pairs at e = {_ks(present)})" if present else "")))
    red = _mean_change(pairs, "mse", _reduction)
    verdicts = [_magnitude(red, 10.9)]
    text = f"MSE reduction {_pct(red)} (mean over k = {_ks(on.k for on, _ in pairs)})"
    numbers = {"mse_reduction_pct": red}
    lr = _with(pairs, "loss_recovered")
    if lr:
        imp = _mean_change(lr, "loss_recovered", _improvement)
        verdicts.append(_magnitude(imp, 1.75))
        text += f"; Loss Recovered improvement {_pct(imp)}"
        numbers["lr_improvement_pct"] = imp
    else:
        text += "; Loss Recovered not in the records"
    return Measurement(_combine(verdicts), text, numbers)


def c_fs_l0_2(runs):
    k = 2
    pairs = [(on, off) for on, off in _fs_pairs_with(runs, "loss_recovered") if on.k == k]
    if not pairs:
        at_k = [p for p in R.fs_pairs(runs) if p[0].k == k]
        if at_k:
            return not_measurable(f"metric 'loss_recovered' is missing from the {len(at_k)} Feature Scaling pairs at "
                                  f"L0 = {k} (it needs an lm: section in the runs)")
        return not_measurable(_fs_missing(runs, "loss_recovered", f"no Feature Scaling on/off pair at L0 = {k}"))
    imp = _mean_change(pairs, "loss_recovered", _improvement)
    return Measurement(_magnitude(imp, 4.132),
                       f"Loss Recovered improvement {_pct(imp)} (mean over e = {_ks(on.active for on, _ in pairs)})",
                       {"lr_improvement_pct": imp})


# ---- Fig. 2: omega ---------------------------------------------------------------------------------------------------

def c_omega_positive(runs):
    sel = [r for r in runs if r.arch == "scale" and r.fs_on and r.has("omega_mean")]
    if not sel:
        return not_measurable("no Scale run with Feature Scaling has 'omega_mean'")
    pos = sum(r.metric("omega_mean") > 0 for r in sel)
    om = [r.metric("omega_mean") for r in sel]
    text = f"omega_mean > 0 in {pos} of {len(sel)} runs (min {min(om):.4g}, max {max(om):.4g})"
    vecs = [r.vector("omega") for r in sel if r.vector("omega") is not None]
    numbers = {"positive": pos, "runs": len(sel), "min": min(om), "max": max(om)}
    if vecs:
        allv = np.concatenate(vecs)
        text += f"; per-expert omega > 0 for {100 * np.mean(allv > 0):.1f}% of {allv.size} experts"
        numbers["expert_share_positive_pct"] = float(100 * np.mean(allv > 0))
    return Measurement(_share(pos, len(sel)), text, numbers)


def _spearman(x, y):
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if np.std(rx) == 0 or np.std(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def c_omega_grows(runs):
    groups = []
    for g in R.e_sweeps(runs, fs_on=True):
        pts = sorted((e, r.metric("omega_mean")) for e, r in g.items() if r.has("omega_mean"))
        if len(pts) >= 2:
            groups.append((next(iter(g.values())).k, pts))
    if not groups:
        return not_measurable(_e_sweep_missing(runs, True, "omega_mean", "with Feature Scaling")
                              if not R.e_sweeps(runs, fs_on=True) else
                              "the e-sweeps of Scale runs with Feature Scaling lack 'omega_mean'")
    increasing = [k for k, pts in groups if all(b[1] > a[1] for a, b in zip(pts, pts[1:]))]
    rhos = [_spearman([p[0] for p in pts], [p[1] for p in pts]) for _, pts in groups]
    rho = float(np.nanmean(rhos)) if any(math.isfinite(x) for x in rhos) else math.nan
    text = (f"omega_mean strictly increasing in e in {len(increasing)} of {len(groups)} sweeps; mean Spearman "
            f"rho(e, omega) = {rho:.2f} (e = {_ks(p[0] for _, pts in groups for p in pts)})")
    if len(increasing) == len(groups):
        verdict = HOLDS
    else:
        verdict = PARTLY if math.isfinite(rho) and rho > 0 else FAILS
    return Measurement(verdict, text, {"increasing": len(increasing), "sweeps": len(groups), "spearman": rho})


# ---- Fig. 6: specialization ------------------------------------------------------------------------------------------

def c_intra_inter(runs):
    sel = [r for r in runs if r.is_scale_moe and r.fs_on and r.active >= 2]
    both = [r for r in sel if r.has("intra_expert_redundancy") and r.has("inter_expert_redundancy")]
    if not both:
        missing = [m for m in ("intra_expert_redundancy", "inter_expert_redundancy") if not any(r.has(m) for r in sel)]
        return not_measurable("no Scale run with e >= 2 and Feature Scaling" if not sel else
                              f"metric {', '.join(repr(m) for m in missing) or 'pair'} missing from the {len(sel)} "
                              f"Scale runs with e >= 2")
    informative = [r for r in both
                   if not _both_zero(r.metric("intra_expert_redundancy"), r.metric("inter_expert_redundancy"))]
    if not informative:
        return not_measurable(f"intra- and inter-expert redundancy are both 0 in all {len(both)} runs with e >= 2")
    wins = sum(r.metric("intra_expert_redundancy") > r.metric("inter_expert_redundancy") for r in informative)
    text = (f"intra > inter in {wins} of {len(informative)} runs with e >= 2 ({len(both) - len(informative)} more "
            "with both 0)")
    verdicts = [_share(wins, len(informative))]
    pairs = _e_pairs(runs, True, "inter_expert_redundancy")
    if pairs:
        hi = sum(one.metric("inter_expert_redundancy") > r.metric("inter_expert_redundancy") for one, r in pairs)
        text += f"; e = 1 inter-expert redundancy above e >= 2 in {hi} of {len(pairs)} points"
        verdicts.append(_share(hi, len(pairs)))
    return Measurement(_combine(verdicts), text, {"intra_gt_inter": wins, "runs": len(informative)})


def _cdf_area(run):
    v = run.vector("specialization_cdf")
    if v is None:
        return math.nan
    c, _ = R.specialization_curve(run)
    return float(np.mean(c))


def c_cdf(runs):
    pairs = _e_pairs_where(runs, True, lambda r: math.isfinite(_cdf_area(r)))
    if not pairs:
        return not_measurable(_e_sweep_missing(runs, True, "specialization_cdf", "with Feature Scaling")
                              .replace("metric", "vector"))
    wins = sum(_cdf_area(r) > _cdf_area(one) for one, r in pairs)
    return Measurement(_share(wins, len(pairs)),
                       f"e >= 2 CDF steeper (larger area under the CDF) than e = 1 in {wins} of {len(pairs)} points",
                       {"wins": wins, "points": len(pairs)})


# ---- Fig. 7: activation similarity -----------------------------------------------------------------------------------

def c_activation_similarity(runs):
    metric = R.preferred_metric(R.fs_pairs(runs), R.ACTIVATION_SIMILARITY, R.has_scalar)
    pairs = _fs_pairs_with(runs, metric)
    if not pairs:
        return not_measurable(_fs_missing(runs, metric))
    multi = [_reduction(on.metric(metric), off.metric(metric)) for on, off in pairs if on.active >= 2]
    single = [_reduction(on.metric(metric), off.metric(metric)) for on, off in pairs if on.active == 1]
    multi = [x for x in multi if math.isfinite(x)]
    single = [x for x in single if math.isfinite(x)]
    parts, verdicts, numbers = [], [], {}
    if multi:
        m = float(np.mean(multi))
        parts.append(f"e >= 2: mean reduction {_pct(m)} over {len(multi)} pairs")
        verdicts.append(_magnitude(m, 6.19))
        numbers["multi_reduction_pct"] = m
    else:
        parts.append("e >= 2: no pairs")
    if single:
        s = float(np.mean(single))
        parts.append(f"e = 1: mean reduction {_pct(s)} over {len(single)} pairs (paper: an increase)")
        verdicts.append(HOLDS if s < 0 else FAILS)
        numbers["single_reduction_pct"] = s
    else:
        parts.append("e = 1: no pairs")
    numbers["metric"] = metric
    return Measurement(_combine(verdicts), "; ".join(parts) + f" ('{metric}': {R.TOKEN_SET[metric]})", numbers)


# ---- Fig. 8: redundancy ----------------------------------------------------------------------------------------------

def _both_zero(a, b):
    """Two redundancy values that are both 0 cannot show a difference (no near-duplicate latents in either)."""
    return a == 0 and b == 0


def c_redundancy_e(runs):
    pairs = _e_pairs(runs, False, "redundancy")
    if not pairs:
        return not_measurable(_e_sweep_missing(runs, False, "redundancy", "without Feature Scaling"))
    informative = _informative(pairs, "redundancy")
    if not informative:
        return not_measurable(f"redundancy is 0 for e = 1 and e >= 2 at all {len(pairs)} points (no near-duplicate "
                              "latents at this size)")
    wins = sum(r.metric("redundancy") < one.metric("redundancy") for one, r in informative)
    one_mean = float(np.mean([one.metric("redundancy") for one, _ in pairs]))
    multi_mean = float(np.mean([r.metric("redundancy") for _, r in pairs]))
    return Measurement(_share(wins, len(informative)),
                       f"e >= 2 less redundant than e = 1 in {wins} of {len(informative)} points "
                       f"({len(pairs) - len(informative)} more with redundancy 0 in both; mean redundancy e = 1: "
                       f"{one_mean:.4f}, e >= 2: {multi_mean:.4f})",
                       {"wins": wins, "points": len(informative), "both_zero": len(pairs) - len(informative)})


def c_fs_redundancy(runs):
    pairs = _fs_pairs_with(runs, "redundancy")
    if not pairs:
        return not_measurable(_fs_missing(runs, "redundancy"))
    informative = _informative(pairs, "redundancy")
    if not informative:
        return not_measurable(f"redundancy is 0 with and without Feature Scaling in all {len(pairs)} pairs (no "
                              "near-duplicate latents at this size)")
    wins = sum(on.metric("redundancy") < off.metric("redundancy") for on, off in informative)
    text = (f"FS lowers redundancy in {wins} of {len(informative)} pairs ({len(pairs) - len(informative)} more with "
            "redundancy 0 in both)")
    verdicts = [_share(wins, len(informative), "most")]
    numbers = {"wins": wins, "pairs": len(informative), "both_zero": len(pairs) - len(informative)}
    at16 = [(on, off) for on, off in pairs if on.k == 16]
    off16 = float(np.mean([off.metric("redundancy") for _, off in at16])) if at16 else math.nan
    if at16 and off16 > 0:
        red = _reduction(float(np.mean([on.metric("redundancy") for on, _ in at16])), off16)
        text += f"; at L0 16: reduction {_pct(red)}"
        verdicts.append(_magnitude(red, 50.0))
        numbers["reduction_l0_16_pct"] = red
    else:
        text += "; at L0 16: " + ("no pairs" if not at16 else "no redundant latents without FS (reduction undefined)")
    return Measurement(_combine(verdicts), text, numbers)


# ---- Appendix C / D --------------------------------------------------------------------------------------------------

def c_decomposition(runs):
    sweeps = R.decomposition_sweeps(runs)
    if not sweeps:
        return not_measurable("no Scale runs identical except feature_scaling with identity or learned "
                              "(the appc-decomposition grid)")
    ident, learned = [], []
    for g in sweeps:
        mean = next((g[m] for m in R.FS_MEAN if m in g and g[m].has("mse")), None)
        if mean is None:
            continue
        if "identity" in g and g["identity"].has("mse"):
            ident.append((mean, g["identity"]))
        if "learned" in g and g["learned"].has("mse"):
            learned.append((mean, g["learned"]))
    if not ident:
        return not_measurable("no identity run with a mean-method counterpart (same config) that both have 'mse'")
    wins = sum(i.metric("mse") > m.metric("mse") for m, i in ident)
    text = f"identity MSE above mean in {wins} of {len(ident)} L0 points"
    numbers = {"identity_worse": wins, "points": len(ident)}
    if learned:
        gap = float(np.mean([abs(_reduction(l.metric("mse"), m.metric("mse"))) for m, l in learned]))
        text += f"; learned vs mean: mean absolute MSE difference {_pct(gap)} over {len(learned)} points"
        numbers["learned_vs_mean_abs_pct"] = gap
    return Measurement(_share(wins, len(ident)), text, numbers)


def _secondary_mode(run, name):
    """Mean number of shared active latents over the token pairs that share at least one (the secondary mode)."""
    d = R.overlap_distribution(run, name)
    if d is None or d[1:].sum() <= 0:
        return math.nan
    return float((np.arange(len(d))[1:] * d[1:]).sum() / d[1:].sum())


def c_overlap_shift(runs):
    all_pairs = R.fs_pairs(runs)
    name = R.preferred_metric(all_pairs, R.OVERLAP_HISTOGRAM, R.has_vector)
    pairs = [(on, off) for on, off in all_pairs if on.active >= 2]
    usable = [(on, off) for on, off in pairs
              if math.isfinite(_secondary_mode(on, name)) and math.isfinite(_secondary_mode(off, name))]
    if not usable:
        if not all_pairs:
            return not_measurable(_fs_missing(runs, name))
        if not pairs:
            return not_measurable("no Feature Scaling on/off pair with e >= 2")
        return not_measurable(f"vector '{name}' is missing from (or has no pair with k_ij > 0 in) the {len(pairs)} "
                              "Feature Scaling on/off pairs with e >= 2")
    wins = sum(_secondary_mode(on, name) > _secondary_mode(off, name) for on, off in usable)
    shift = float(np.mean([_secondary_mode(on, name) - _secondary_mode(off, name) for on, off in usable]))
    return Measurement(_share(wins, len(usable)),
                       f"mean overlap of pairs with k_ij > 0 higher with FS in {wins} of {len(usable)} pairs with "
                       f"e >= 2 (mean shift {shift:+.3f} latents; '{name}': {R.TOKEN_SET[name]})",
                       {"wins": wins, "pairs": len(usable), "metric": name})


CLAIMS = (
    Claim("C1", "Abstract; Sec. 3.1, Fig. 3a", "24% lower reconstruction error than existing MoE-SAE methods",
          "24%", "per L0: 1 - MSE(Scale setting)/MSE(best Switch) under the same condition (data, k, compat); mean "
          "over L0 per Scale setting (e >= 2, FS on), then over settings", c_vs_switch),
    Claim("C2", "Sec. 3.1, Fig. 3a", "MSE reduced vs the next-best baseline at L0 32, 64, 128",
          "37.21%, 41.99%, 42.54%", "best Scale setting vs the best of TopK and Switch at that k (Gated: no k; drawn "
          "in Fig. 3 only)", c_next_best),
    Claim("C3", "Sec. 3.1, Fig. 3a", "Scale SAE has a lower MSE than all baselines at every L0, without exception",
          "every L0", "per L0: best Scale setting vs best of TopK, Switch", c_lowest_mse),
    Claim("C4", "Sec. 3.1, Fig. 3b", "out of domain, Scale SAE has the lowest MSE in nearly all settings",
          "nearly all L0", "as C3 with /final mse_ood; holds at >= 75% of the L0 points", c_lowest_mse_ood),
    Claim("C5", "Sec. 3.1, Fig. 3c", "Loss Recovered out of domain: Scale outperforms TopK at L0 >= 8",
          "L0 >= 8", "per L0 >= 8: best Scale loss_recovered_ood >= TopK's", c_lr_ood_vs_topk),
    Claim("C6", "Abstract; Sec. 3.4, Fig. 6a/8", "99% reduction in feature redundancy compared to MoE-SAE (Switch)",
          "99%", "redundancy = share of latents with max decoder cosine > threshold (0.9; 0.8 under compat: "
          "reference); 1 - mean over L0 of Scale / of Switch, per Scale setting, mean over settings",
          c_redundancy_vs_switch),
    Claim("C7", "Sec. 3.2.1, Fig. 4", "e >= 2 active experts beat e = 1 (lower MSE)", "every (e >= 2, L0)",
          "Scale runs with FS identical except e: MSE(e) < MSE(e = 1) at the same L0", c_multi_expert),
    Claim("C8", "Sec. 3.2.2, Fig. 5", "Feature Scaling lowers MSE and raises Loss Recovered in nearly all scenarios",
          "nearly all", "FS on/off pairs (identical except feature_scaling); holds at >= 75% of the pairs",
          c_fs_overall),
    Claim("C9", "Sec. 3.2.2, Fig. 5b", "at e = 16 Feature Scaling reduces MSE by 10.9% on average and improves Loss "
          "Recovered by 1.75%", "10.9% MSE, 1.75% LR", "FS on/off pairs at e = 16, mean over L0", c_fs_e16),
    Claim("C10", "Sec. 3.2.2, Fig. 5a", "at L0 = 2 Feature Scaling improves Loss Recovered by 4.132% on average",
          "4.132%", "FS on/off pairs at k = 2, relative LR improvement, mean over e", c_fs_l0_2),
    Claim("C11", "Sec. 2.2.2, Fig. 2", "the trained omega converges to a positive value", "omega > 0",
          "Scale runs with FS: /final omega_mean > 0 in every run; share of per-expert omega > 0", c_omega_positive),
    Claim("C12", "Sec. 2.2.2, Fig. 2", "omega grows with the number of active experts (a scaling law)",
          "increasing in e", "e-sweeps with FS: omega_mean strictly increasing in e, and Spearman rho (the paper's "
          "e = 1 column is a heuristic estimate, reference-implementations.md 3.8.9)", c_omega_grows),
    Claim("C13", "Sec. 3.3.1, Fig. 6a", "multi-expert models: high intra-expert, low inter-expert similarity; e = 1 "
          "high everywhere", "intra > inter", "/final intra_expert_redundancy vs inter_expert_redundancy per run "
          "(e >= 2); e = 1 vs e >= 2 inter-expert values in e-sweeps", c_intra_inter),
    Claim("C14", "Sec. 3.3.1, Fig. 6b", "e = 1 has a flat expert-activation CDF, e >= 2 much steeper CDFs",
          "steeper for e >= 2", "area under the specialization_cdf vector (experts sorted by count), e >= 2 vs e = 1 "
          "in e-sweeps", c_cdf),
    Claim("C15", "Sec. 3.3.2, Fig. 7a", "Feature Scaling lowers activation similarity by 6.19% on average for "
          "e >= 2, and raises it for e = 1", "6.19%", "FS on/off pairs: 1 - sim(on)/sim(off) of /final "
          "activation_similarity_verbs (Eq. A.3 on verb tokens; else activation_similarity, all tokens), mean over "
          "pairs", c_activation_similarity),
    Claim("C16", "Sec. 3.4, Fig. 8a", "without Feature Scaling, e >= 2 has much lower feature redundancy than e = 1",
          "every (e >= 2, L0)", "e-sweeps without FS: redundancy(e) < redundancy(e = 1) at the same L0",
          c_redundancy_e),
    Claim("C17", "Sec. 3.4, Fig. 8b", "Feature Scaling reduces feature redundancy in most settings, by over 50% at "
          "L0 16", "> 50% at L0 16", "FS on/off pairs: lower redundancy in >= 75% of pairs; at k = 16: 1 - mean(on)"
          "/mean(off)", c_fs_redundancy),
    Claim("C18", "Appendix C, Fig. 10", "identity decomposition (Method 1) always has a higher MSE than the mean "
          "(Method 0); learned (Method 2) is close to mean", "identity always worse", "decomposition sweeps: MSE of "
          "identity vs mean (A*mean under compat: reference) at each L0; absolute MSE difference learned vs mean "
          "reported", c_decomposition),
    Claim("C19", "Appendix D, Fig. 11", "Feature Scaling shifts the secondary (non-zero) mode of the overlap "
          "distribution to the right", "consistently", "FS on/off pairs with e >= 2: mean k_ij over pairs with "
          "k_ij > 0 from the overlap_histogram_verbs vector (else overlap_histogram), on vs off", c_overlap_shift),
)


def measure_all(runs):
    """{claim id: {compat: Measurement}} for every claim and both variants."""
    out = {}
    for c in CLAIMS:
        out[c.id] = {}
        for v in R.COMPATS:
            rv = R.of_compat(runs, v)
            out[c.id][v] = c.measure(rv) if rv else not_measurable(f"no run with model.compat: {v} in the inputs")
    return out


# ---- claims.md -------------------------------------------------------------------------------------------------------

def _cell(text):
    return str(text).replace("|", "/").replace("\n", " ")


def render_markdown(collections, results, figures=None):
    """claims.md: inputs, the claims table (paper defaults and compat: reference side by side), what could not be
    measured, and (when given) the status of every figure."""
    out = ["# The paper's claims, measured from these records", ""]
    out.append("Paper: *Beyond Redundancy: Diverse and Specialized Multi-Expert Sparse Autoencoder* (Scale SAE, "
               "arXiv 2511.05745). Every measured number below is computed from the collected files listed here; "
               "nothing is copied from the paper except the paper's own numbers in the third column.")
    out.append("")
    out.append("## Inputs")
    out.append("")
    for c in collections:
        line = (f"- `{c.path}`: grid `{c.name}` (`{c.source}`), {c.rows} runs, {len(c.runs)} finished "
                f"({sum(r.compat == 'paper' for r in c.runs)} paper defaults, "
                f"{sum(r.compat == 'reference' for r in c.runs)} compat: reference)")
        if c.unfinished:
            line += "; not used (no finished record): " + ", ".join(f"{i} ({s})" for i, s in c.unfinished[:8])
            if len(c.unfinished) > 8:
                line += f", ... {len(c.unfinished) - 8} more"
        out.append(line)
    out.append("")
    out.append("Verdicts: **holds** = the paper's sign and at least "
               f"{int(MAGNITUDE_SHARE * 100)}% of its number (for \"every\"/\"always\" claims: at every point "
               "measured; \"nearly all\"/\"most\": at >= 75% of them); **holds in direction only** = same sign, "
               "smaller; **partly holds** = at some points or one part of the claim; **does not hold**; "
               "**not measurable** = the records lack the runs or metric named. MSE reduction = 1 - MSE_new/MSE_old; "
               "Loss Recovered improvement = LR_new/LR_old - 1.")
    out.append("")
    out.append("## Claims")
    out.append("")
    out.append("| ID | Claim (paper section) | Paper's number | Paper defaults: measured | Paper defaults: verdict "
               "| compat: reference: measured | compat: reference: verdict | How measured |")
    out.append("|---|---|---|---|---|---|---|---|")
    for c in CLAIMS:
        p, r = results[c.id]["paper"], results[c.id]["reference"]
        out.append("| " + " | ".join(_cell(x) for x in (
            c.id, f"{c.text} ({c.where})", c.paper, p.value, f"**{p.verdict}**", r.value, f"**{r.verdict}**",
            c.how)) + " |")
    out.append("")
    out.append("## Not measurable with these records")
    out.append("")
    na = [(c, v, results[c.id][v]) for c in CLAIMS for v in R.COMPATS if results[c.id][v].verdict == NA]
    if not na:
        out.append("Every claim was measured for both variants.")
    for c, v, m in na:
        out.append(f"- {c.id} ({R.COMPAT_LABEL[v]}): {m.value}")
    out.append("")
    out.append("## Figures")
    out.append("")
    if figures is None:
        out.append("Not drawn by this command (analysis/claims.py); analysis/make_figures.py draws them and lists "
                   "here what each could not show.")
    else:
        out.append("| Figure | Paper counterpart | Status | Panels not drawn (why) |")
        out.append("|---|---|---|---|")
        for f in figures:
            miss = "; ".join(f"{', '.join(panels)}: {why}" for panels, why in f.missing_grouped()) or "-"
            out.append("| " + " | ".join(_cell(x) for x in (f"`{f.file}`", f.paper, f.status, miss)) + " |")
        notes = [(f.file, n) for f in figures for n in f.notes]
        if notes:
            out.append("")
            out.append("Notes:")
            out.append("")
            out += [f"- `{fname}`: {n}" for fname, n in notes]
    out.append("")
    return "\n".join(out)


def report(results, figures=None):
    """The same content as JSON-serializable data (report.json)."""
    rep = {"claims": {cid: {v: {"verdict": m.verdict, "value": m.value, "numbers": _jsonable(m.numbers)}
                            for v, m in per.items()} for cid, per in results.items()}}
    if figures is not None:
        rep["figures"] = {f.file: {"status": f.status, "paper": f.paper, "panels": f.panels, "notes": f.notes}
                          for f in figures}
    return rep


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
