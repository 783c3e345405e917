"""`python -m hpsv3_benchmarks.gpu`: spawned preprocessing workers skip re-importing a `__main__` module,
so they start without torch."""

import sys

from hpsv3_benchmarks.gpu.gpu_bench import main

sys.exit(main())
