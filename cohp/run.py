"""`python cohp/run.py --server HOST:PORT --prompt TEXT ...`: the same as `hpsv3 cohp` (see --help)."""

import os
import sys

# This folder's modules are the package hpsv3_cohp; as top-level names they could shadow others.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from hpsv3_cohp.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="python cohp/run.py"))
