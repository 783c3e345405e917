"""`python training/train.py --config training/configs/NAME.yaml [key=value ...]`: the same as `hpsv3 train`."""

import os
import sys

# This folder's modules are the package hpsv3_training; as top-level names they could shadow others.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from hpsv3_training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="python training/train.py"))
