"""LEA on BOLD5000: decode test fMRI into images and encode test images into fMRI.

    python LEA_BOLD.py [--subject CSI1|all] [--config configs/LEA_BOLD.yaml] [--demo] ...

See `python LEA_BOLD.py --help`; the work is done by inference/run_lea.py.
"""
import sys

from inference.run_lea import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dataset="BOLD5000"))
