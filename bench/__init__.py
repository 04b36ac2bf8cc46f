"""Benchmarks: each module is a script (``python -m bench.<name>``) that prints its figures and the command."""
