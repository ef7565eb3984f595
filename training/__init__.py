"""Training of the LEA networks: a generic engine (engine.py), optimiser and schedule, DDP, logging, and one stage per network (stage_*.py)."""
