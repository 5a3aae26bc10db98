"""Reading collected grid files and finding the runs a comparison needs.

A collected file (`moesae collect GRID.yaml --out GRID.h5`; layout in docs/records.md, "Grid collections") holds a
run table and, for every finished run, `/runs/<id>` with the resolved config (`config` attr `yaml`), the final
scalars (`final` attrs) and the final vectors (`final/<name>` datasets: `expert_fraction`, `omega`, ...). This module
reads only that; it never looks at the individual records.

Runs are compared the way the paper's figures compare them:
  * ablations (Fig. 2, 4-8, Appendix C/D) compare runs whose resolved configs are identical except for the studied key
    (`model.active_experts` for Multiple Expert Activation, `model.feature_scaling` for Feature Scaling and the
    decomposition methods) -- see `sweeps` and `fs_pairs`;
  * the FLOPS-matched comparison (Fig. 3) compares architectures trained under the same condition (same data, k,
    compat, steps, batch size, seed) -- see `condition_key` and `fig3_runs`.
"""
from __future__ import annotations

import math
import pathlib
from collections import defaultdict
from dataclasses import dataclass, field

import h5py
import numpy as np
import yaml

COLLECTION_FORMAT = "moesae-grid-collection"

# The two model variants every figure and claim shows side by side: the paper's equations (model.compat: paper) and
# the reference code's choices (model.compat: reference, docs/configuration.md "Presets").
COMPATS = ("paper", "reference")
COMPAT_LABEL = {"paper": "paper defaults", "reference": "compat: reference"}

# Config keys that do not change what is learned (bookkeeping), ignored when matching runs.
IGNORED_KEYS = frozenset({"model.d", "train.threads", "train.log_every", "train.eval_every", "train.checkpoint_every"})

# What makes two runs of different architectures comparable (Fig. 3): same data, sparsity, variant and training length.
CONDITION_KEYS = ("data.path", "data.dataset", "data.eval_tokens", "data.eval_fraction", "eval.max_tokens",
                  "model.compat", "model.k", "train.steps", "train.batch_size", "train.seed",
                  "lm.model", "lm.text", "lm.ood_text")

# Feature Scaling low-pass values (docs/configuration.md `model.feature_scaling`, paper Eq. 2.5 and Appendix C).
FS_OFF = "none"
FS_MEAN = ("mean", "reference")  # Method 0 of Appendix C; compat: reference turns `mean` into the reference A*mean
FS_METHOD_LABEL = {"mean": "Method 0: mean", "reference": "Method 0: A*mean (reference code)",
                   "identity": "Method 1: identity", "learned": "Method 2: learned A_LP", "none": "no Feature Scaling"}

ARCH_LABEL = {"topk": "TopK", "gated": "Gated", "switch": "Switch", "scale": "Scale"}
BASELINES = ("topk", "gated", "switch")  # the architectures Fig. 3 compares Scale SAE with


def _flatten(tree, prefix=""):
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class Run:
    """One finished run of a collected file: its resolved config, final scalars and final vectors."""
    id: str
    collection: str        # the grid's name (collected file attr `name`)
    path: str              # the collected file it came from
    config: dict           # resolved run config, flattened to dotted keys ("model.k" -> 8)
    final: dict            # /final scalars (mse, fvu, l0, redundancy, omega_mean, ...)
    vectors: dict          # /final vectors (expert_fraction [E], omega [E], ...), as numpy arrays
    preset: str = ""

    @property
    def arch(self) -> str:
        return str(self.config.get("model.arch", "scale"))

    @property
    def compat(self) -> str:
        return str(self.config.get("model.compat", "paper"))

    @property
    def experts(self) -> int:
        return int(self.config.get("model.experts", 1))

    @property
    def active(self) -> int:
        return int(self.config.get("model.active_experts", 1))

    @property
    def k(self) -> int:
        return int(self.config.get("model.k", 0))

    @property
    def dict_size(self) -> int:
        return int(self.config.get("model.dict_size", 0))

    @property
    def fs(self) -> str:
        return str(self.config.get("model.feature_scaling", FS_OFF))

    @property
    def fs_on(self) -> bool:
        return self.fs != FS_OFF

    @property
    def is_scale_moe(self) -> bool:
        """A Scale SAE with more than one expert (the paper's ablations are on E = 64)."""
        return self.arch == "scale" and self.experts > 1

    @property
    def l0_axis(self) -> float:
        """The x value of the paper's "L0" axes: the target k, except for Gated SAE (no k): its measured L0."""
        return self.metric("l0") if self.arch == "gated" else float(self.k)

    def metric(self, name: str) -> float:
        v = self.final.get(name)
        return float(v) if v is not None else math.nan

    def has(self, name: str) -> bool:
        return math.isfinite(self.metric(name))

    def vector(self, name: str):
        v = self.vectors.get(name)
        return None if v is None or len(v) == 0 else v

    def setting(self) -> str:
        """Short architecture label, e.g. 'Scale E64 e2', 'Switch E32', 'TopK F64'."""
        a = ARCH_LABEL.get(self.arch, self.arch)
        if self.arch == "scale":
            return f"{a} E{self.experts} e{self.active}"
        if self.arch == "switch":
            return f"{a} E{self.experts}"
        return f"{a} F{self.dict_size}"


@dataclass
class Collection:
    """One collected file: its grid name, its finished runs and the rows that have no finished record."""
    path: str
    name: str
    source: str
    rows: int
    runs: list = field(default_factory=list)
    unfinished: list = field(default_factory=list)  # (id, status)


def load_collection(path) -> Collection:
    """Reads a `moesae collect` output file. Raises SystemExit with a clear message for other files."""
    path = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SystemExit(f"error: cannot open '{path}' as HDF5: {e}")
    with f:
        if _str(f.attrs.get("format", "")) != COLLECTION_FORMAT:
            raise SystemExit(f"error: '{path}' is not a moesae grid collection (format attr "
                             f"'{_str(f.attrs.get('format', ''))}'; make one with "
                             "`moesae collect GRID.yaml --out GRID.h5`)")
        t = f["table"]
        ids = list(t["id"].asstr()[()])
        status = list(t["status"].asstr()[()])
        presets = list(t["preset"].asstr()[()]) if "preset" in t else [""] * len(ids)
        c = Collection(path=path, name=_str(f.attrs.get("name", pathlib.Path(path).stem)),
                       source=_str(f.attrs.get("source", "")), rows=len(ids))
        runs = f["runs"] if "runs" in f else {}
        for rid, st, preset in zip(ids, status, presets):
            if rid not in runs:
                c.unfinished.append((rid, st))
                continue
            g = runs[rid]
            config = _flatten(yaml.safe_load(_str(g["config"].attrs["yaml"])))
            final = {k: float(v) for k, v in g["final"].attrs.items()}
            vectors = {k: np.asarray(g["final"][k][()], dtype=float) for k in g["final"]}
            c.runs.append(Run(id=rid, collection=c.name, path=path, config=config, final=final, vectors=vectors,
                              preset=preset))
    return c


def load(paths):
    """Loads every collected file; returns (collections, finished runs of all of them). A file given twice counts
    once."""
    collections, seen = [], set()
    for p in paths:
        key = str(pathlib.Path(p).resolve())
        if key in seen:
            continue
        seen.add(key)
        collections.append(load_collection(p))
    runs = [r for c in collections for r in c.runs]
    return collections, runs


# ---- matching runs ---------------------------------------------------------------------------------------------------

def config_key(run: Run, vary) -> tuple:
    """The run's resolved config without the keys in `vary` (and bookkeeping keys): equal keys = same experiment
    except for `vary`."""
    vary = set(vary)
    return tuple(sorted((k, repr(v)) for k, v in run.config.items() if k not in IGNORED_KEYS and k not in vary))


def condition_key(run: Run) -> tuple:
    """What two runs of different architectures must share to be compared at one point of Fig. 3."""
    return tuple((k, repr(run.config.get(k))) for k in CONDITION_KEYS)


def sweeps(runs, key: str):
    """Groups of runs identical except for `key` that take at least two values of it (e.g. e in {1, 2, 4}), as a
    list of {value: run} dicts. Runs without a partner are left out."""
    groups = defaultdict(dict)
    for r in runs:
        groups[config_key(r, {key})][r.config.get(key)] = r
    return [g for g in groups.values() if len(g) >= 2]


def e_sweeps(runs, fs_on=True):
    """Multiple Expert Activation ablations (Fig. 2, 4, 6, 8a): Scale runs (E > 1) that differ only in e, with
    Feature Scaling on (fs_on=True), off (False) or either (None). Returns a list of {e: run}."""
    sel = [r for r in runs if r.is_scale_moe and (fs_on is None or r.fs_on == fs_on)]
    return sweeps(sel, "model.active_experts")


def fs_pairs(runs):
    """Feature Scaling ablation pairs (Fig. 5, 7, 8b, 11): (with, without) Scale runs identical except that
    `feature_scaling` is the mean low-pass (`mean`, or `reference` under compat: reference) in one and `none` in the
    other."""
    pairs = []
    for g in _fs_sweeps(runs):
        off = g.get(FS_OFF)
        for m in FS_MEAN:
            if off is not None and m in g:
                pairs.append((g[m], off))
    return pairs


def decomposition_sweeps(runs):
    """Appendix C (Fig. 10): Scale runs identical except for the low-pass method, where at least one of `identity`,
    `learned` is present. Returns a list of {method: run}."""
    return [g for g in _fs_sweeps(runs) if "identity" in g or "learned" in g]


def _fs_sweeps(runs):
    """Scale runs identical except for `model.feature_scaling`, as a list of {method: run}."""
    return sweeps([r for r in runs if r.arch == "scale"], "model.feature_scaling")


def is_paper_scale(run: Run) -> bool:
    """The paper's Scale SAE of Fig. 3: several experts, e >= 2 active, Feature Scaling on (mean low-pass)."""
    return run.is_scale_moe and run.active >= 2 and run.fs in FS_MEAN


def fig3_runs(runs):
    """Runs of the FLOPS-matched comparison (Fig. 3): from every collection that holds a baseline (TopK, Gated,
    Switch), the baselines and the paper's Scale SAE (e >= 2, Feature Scaling on)."""
    with_baseline = {r.path for r in runs if r.arch in BASELINES}
    return [r for r in runs if r.path in with_baseline and (r.arch in BASELINES or is_paper_scale(r))]


def by_condition(runs):
    """Fig. 3 comparison groups: {condition_key: [runs]} over `fig3_runs`, without Gated (its L0 is not set by k)."""
    groups = defaultdict(list)
    for r in fig3_runs(runs):
        if r.arch != "gated":
            groups[condition_key(r)].append(r)
    return groups


def of_compat(runs, compat):
    return [r for r in runs if r.compat == compat]


def compats_present(runs):
    return [c for c in COMPATS if any(r.compat == c for r in runs)]


def mean_by(runs, key_fn, value_fn):
    """{key: (mean value, count)} over the runs whose value is finite: the mean of runs that land on one plotted point
    (e.g. the same configuration collected from two grid files)."""
    acc = defaultdict(list)
    for r in runs:
        v = value_fn(r)
        if v is not None and math.isfinite(v):
            acc[key_fn(r)].append(v)
    return {k: (float(np.mean(v)), len(v)) for k, v in acc.items()}


def metric_presence(runs, name):
    """(runs having metric `name` as a finite scalar, sentence saying how many lack it)."""
    have = [r for r in runs if r.has(name)]
    return have, f"'{name}' is in {len(have)} of the {len(runs)} candidate runs"


# ---- vectors of the records, as the figures read them ----------------------------------------------------------------

def specialization_curve(run):
    """(curve, source) for Fig. 6b: the cumulative share of expert activations with experts sorted by descending
    count. From the `specialization_cdf` vector when the record has it (normalized to end at 1; sorted and summed
    first if it is not already cumulative), else from `expert_fraction` (the routing share on held-out tokens, not the
    paper's set of verbs)."""
    v = run.vector("specialization_cdf")
    source = "specialization_cdf"
    if v is None:
        v, source = run.vector("expert_fraction"), "expert_fraction"
        if v is None:
            return None, None
    v = np.asarray(v, dtype=float)
    if not np.all(np.diff(v) >= -1e-12) or source == "expert_fraction":
        v = np.cumsum(np.sort(v)[::-1])
    if v[-1] > 0:
        v = v / v[-1]
    return v, source


def overlap_distribution(run, name="overlap_histogram"):
    """The overlap histogram vector `name` as shares of token pairs per number of shared active latents k_ij = 0, 1,
    ... (None when the record lacks it)."""
    v = run.vector(name)
    if v is None or not np.isfinite(v).all() or v.sum() <= 0:
        return None
    return np.asarray(v, dtype=float) / v.sum()


# ---- token sets of the activation-similarity metrics -----------------------------------------------------------------

# The paper measures activation similarity (Fig. 7, Eq. A.3) and the overlap distribution (Fig. 11) on past-tense
# verb tokens; records of runs on language-model activations carry those as `*_verbs`, and every record carries the
# same metric over all held-out tokens. The verb version is used when the records have it.
ACTIVATION_SIMILARITY = ("activation_similarity_verbs", "activation_similarity")
OVERLAP_HISTOGRAM = ("overlap_histogram_verbs", "overlap_histogram")
TOKEN_SET = {"activation_similarity_verbs": "past-tense verb tokens, as in the paper",
             "activation_similarity": "all held-out tokens; the paper uses verb tokens",
             "overlap_histogram_verbs": "past-tense verb tokens, as in the paper",
             "overlap_histogram": "all held-out tokens; the paper uses verb tokens"}


def preferred_metric(pairs, names, present):
    """The first of `names` that both runs of some pair have (present(run, name)); the last name when none does."""
    for n in names:
        if any(present(a, n) and present(b, n) for a, b in pairs):
            return n
    return names[-1]


def has_scalar(run, name):
    return run.has(name)


def has_vector(run, name):
    return run.vector(name) is not None


def _dim(run):
    return int(run.config.get("model.d", 0))


def by_dimension(collections, runs):
    """[(d, collections, runs)] split by the activation dimension model.d: runs on data of different widths (e.g. the
    laptop grids at d = 64 and the GPT-2 grids at d = 768) are never drawn or measured together."""
    dims = sorted({_dim(r) for r in runs})
    out = []
    for d in dims:
        rd = [r for r in runs if _dim(r) == d]
        paths = {r.path for r in rd}
        out.append((d, [c for c in collections if c.path in paths], rd))
    return out
