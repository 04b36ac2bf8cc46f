"""Virtual phones for demos, tests and benchmarks: adbd on loopback with a small sh behind it.

Nothing in ``phonefleet.agent`` imports this package at import time: ``phonefleet-agent run --virtual N``
loads it when asked for virtual phones.
"""
