"""moesae_analysis: the paper's figures and claims from collected grid files (`moesae collect GRID.yaml --out GRID.h5`).

Modules:
    records  -- read one or more collected files (docs/records.md, "Grid collections") into `Run` objects, and find
                the runs a comparison needs (siblings that differ in one key, Feature Scaling on/off pairs, ...).
    figures  -- one function per paper figure (Fig. 2-8, Appendix C Fig. 10, Appendix D Fig. 11), PNG via Agg.
    claims   -- the paper's quantitative claims, measured from the records, written as claims.md.

Every number drawn or written comes from a record; what a figure or claim needs and the records lack is reported,
never filled in. Command-line entries: analysis/make_figures.py and analysis/claims.py.
"""
