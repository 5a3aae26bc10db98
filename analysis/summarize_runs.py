#!/usr/bin/python3
"""Summarise moesae run records: one row per run with its final metrics, as Markdown (default) or CSV.

    analysis/summarize_runs.py out/quickstart/*.h5
    analysis/summarize_runs.py --csv out/quickstart/ > quickstart.csv

Reads only the HDF5 records (layout: docs/records.md) with h5py; every number comes from a record.
"""
import argparse
import csv
import math
import pathlib
import sys

import h5py
import yaml

DEFAULT_METRICS = ["mse", "fvu", "l0", "redundancy", "gt_recovered", "gt_mmcs", "dead_fraction", "omega_mean",
                   "train_seconds"]


def is_record(path):
    with h5py.File(path, "r") as f:
        return "final" in f and "config" in f


def records(paths):
    """Files given explicitly, and the run records found in given directories (other .h5 files are skipped)."""
    for p in paths:
        p = pathlib.Path(p)
        if p.is_dir():
            yield from sorted(q for q in p.glob("*.h5") if not q.name.endswith(".ckpt.h5") and is_record(q))
        else:
            yield p


def read_record(path):
    with h5py.File(path, "r") as f:
        if "final" not in f or "config" not in f:
            raise SystemExit(f"error: '{path}' is not a moesae run record (no /final or /config)")
        model = yaml.safe_load(f["config"].attrs["yaml"])["model"]
        final = {k: float(v) for k, v in f["final"].attrs.items()}
    return model, final


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="record files or directories of records")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated /final attributes")
    ap.add_argument("--csv", action="store_true", help="CSV instead of a Markdown table")
    a = ap.parse_args()
    metrics = [m for m in a.metrics.split(",") if m]
    rows = []
    for path in records(a.paths):
        model, final = read_record(path)
        row = {"run": path.stem, "arch": model["arch"], "F": model["dict_size"], "E": model["experts"],
               "e": model["active_experts"], "k": model["k"]}
        row.update({m: final.get(m, math.nan) for m in metrics})
        rows.append(row)
    if not rows:
        raise SystemExit("error: no run records found")
    cols = list(rows[0].keys())
    if a.csv:
        w = csv.DictWriter(sys.stdout, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
