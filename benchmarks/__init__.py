"""Benchmarks of an HPSv3 endpoint: `hpsv3 bench` (= `python benchmarks/run.py`) and `benchmarks/throughput.py`."""
