"""GPU benchmark of a real-size HPSv3 (random bf16 weights): official-style forward vs the served fast engine.

`run.sh` is the one command for a lent GPU machine; `gpu_bench.py --self-check` runs the same code paths on
CPU at tiny shapes (part of `make test`).
"""
