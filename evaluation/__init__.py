"""Scoring and showing results: metrics (metrics.py), the ImageNet classifier for the semantic
metric (classifier.py), results-folder reports (report.py) and figures (figures.py)."""
