"""Benchmarks of an HPSv3 endpoint: `hpsv3 bench` (= `python benchmarks/run.py`; the tasks are in cli.py)."""
