"""The ground floor: configuration (config.py), errors (errors.py), file I/O (io.py) and the
precision policy (precision.py). Nothing here imports any other package of the project."""
