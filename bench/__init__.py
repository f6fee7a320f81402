"""The agentrun benchmark (see bench/README.md); run it as `python bench/bench.py`."""
