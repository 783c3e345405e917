"""`python export/onnx.py --checkpoint C --base B --out DIR`: the same as `hpsv3 export`."""

import os
import sys

# This file's folder would shadow the `onnx` package when run as a script: drop it from the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from hpsv3_serve.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
