"""What the benchmark sends the phones, and how much of it per size."""

import os
from dataclasses import dataclass

MODULE = "bench.adb"
TAP = "input tap 1 1"
VIEW = "android.intent.action.VIEW"
URL = "https://example.com/"
VIEW_COMMAND = f"am start -a {VIEW} -d {URL}"
AGENT_POOL = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor, which asyncio.to_thread uses
BIG_POOL = 64
POLL_SEC = 0.02  # the driver's job-status poll (asyncpg, on the agent's loop): ~1 % of one core


@dataclass
class Size:
    phones: int
    taps: int  # steps of the throughput job (one adb shell command each)
    jobs: int  # throughput jobs
    fanouts: int  # open_url runs
    floor_per_phone: int  # commands per phone in each floor loop


QUICK = [Size(20, 10, 1, 3, 5), Size(100, 5, 1, 3, 3)]
FULL = [Size(100, 20, 2, 5, 10), Size(500, 10, 1, 5, 4)]


def sizes(*, quick: bool, phones: list[int] | None) -> list[Size]:
    """The sizes to run: the quick or full pair, or only the phone counts asked for."""
    chosen = QUICK if quick else FULL
    if phones:
        chosen = [s for s in chosen if s.phones in phones] or [Size(p, 10, 1, 5, 4) for p in phones]
    return chosen
