"""LEA on GOD (Kamitani): decode test fMRI into images and encode test images into fMRI.

    python LEA_GOD.py [--subject sbj_1|all] [--config configs/LEA_GOD.yaml] [--demo] ...

See `python LEA_GOD.py --help`; the work is done by inference/run_lea.py.
"""
import sys

from inference.run_lea import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dataset="GOD"))
