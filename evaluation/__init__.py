"""Scoring and showing results: metrics (metrics.py), the ImageNet classifier for the semantic
metric (classifier.py), the simulated-data semantic attribute accuracy (semantic_sim.py), the
retrieval baseline (retrieval.py), stage-by-stage decoding diagnostics (diagnostics.py),
results-folder reports (report.py) and figures (figures.py)."""
