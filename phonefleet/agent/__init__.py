"""PC agent: drives the phones attached to one PC over ADB, and virtual phones for demos, tests and benchmarks."""
