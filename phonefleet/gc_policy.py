"""Garbage collection of the server and agent processes: tuned once each is up, for processes that make and
drop tens of thousands of short-lived objects a second (a 10,000-phone job's orders, acks and results on the
server; commands, reports and outbox rows for hundreds of phones on an agent).

With CPython's defaults a generation-0 collection runs every 700 new container objects, so a fan-out's
short-lived objects are still alive at most collections and get promoted; a full collection follows every few
jobs and walks the whole heap, start-up's modules and models included, with the event loop stopped. Measured
at 10,000 phones on 500 agent connections (``bench.throughput --agents 500``): two full collections of
280 ms each in a 2.7 s job. Two changes, both standard for long-running Python servers:

- ``gc.freeze()`` once start-up is done: what exists then (modules, classes, pydantic's validators, the
  services) lives as long as the process and is never walked again.
- a generation-0 threshold of ``GEN0_THRESHOLD``: fewer, slightly larger young collections, which find
  more of a burst's objects already dead, so less is promoted and full collections come less often.

Reference counting frees acyclic garbage at once either way; only cycles wait for a collection. The test
suite runs servers and agents in its own process without this (freezing there would keep every test's
objects).
"""

import gc
import logging

log = logging.getLogger(__name__)

GEN0_THRESHOLD = 7_000
"""New container objects between young collections (CPython's default: 700)."""


def settle_after_start() -> None:
    """Collect start-up's garbage, freeze what is left, and raise the young generation's threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.debug("garbage collection settled", extra={"frozen": gc.get_freeze_count(), "gen0": GEN0_THRESHOLD})
