"""`python export/tensorrt.py --onnx DIR`: build the GPU target's TensorRT engines (see tensorrt_build)."""

import os
import sys

# This file's folder would shadow the `tensorrt` package when run as a script: drop it from the path.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

from hpsv3_export.tensorrt_build import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
