"""`python benchmarks/run.py --endpoint HOST:PORT TASK ...`: the same as `hpsv3 bench` (see --help)."""

import os
import sys

# This folder's modules are the package hpsv3_benchmarks; as top-level names they could shadow others.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from hpsv3_benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="python benchmarks/run.py"))
