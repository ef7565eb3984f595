"""Training of the LEA networks: a generic engine (engine.py) and one stage per network."""
