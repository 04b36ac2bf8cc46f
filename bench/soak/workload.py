"""Jobs flowing through the soak: about ``in_flight`` open jobs at any time, each created over REST as an
operator would, each naming itself in its URLs so a phone's action log tells which job it ran."""

import asyncio
import contextlib
import random
from typing import Any

import aiohttp
import asyncpg

URL_PREFIX = "https://example.com/soak/"
DONE_SUFFIX = "/done"


def job_body(key: str, rng: random.Random, max_target: int) -> dict[str, Any]:
    """Open the job's URL for a few seconds, then its ``/done`` URL: the second one on a phone's log means
    the run reached its last step."""
    return {
        "title": f"soak {key}",
        "plan": [{"type": "open_url", "url": URL_PREFIX + key, "duration_sec": rng.randint(1, 4)},
                 {"type": "open_url", "url": URL_PREFIX + key + DONE_SUFFIX, "duration_sec": 0}],
        "target_type": "device_count", "target_value": rng.randint(2, max(2, max_target)),
        "priority": rng.randint(0, 2), "max_retries": 3, "timeout_sec": 300,
    }


class JobFeeder:
    """Tops the open jobs up to ``in_flight`` every half second; the server or the database being down
    only skips a round (a create that got no answer may still have made its job: the audit finds it)."""

    def __init__(self, server_url: str, admin_token: str, dsn: str, rng: random.Random, *, in_flight: int,
                 max_target: int) -> None:
        self.server_url = server_url
        self.headers = {"Authorization": f"Bearer {admin_token}"}
        self.dsn = dsn
        self.rng = rng
        self.in_flight = in_flight
        self.max_target = max_target
        self.created = 0
        self.failed_creates = 0
        self._seq = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession(headers=self.headers, timeout=aiohttp.ClientTimeout(total=10)) as http:
            while True:
                open_jobs = await self._open_jobs()
                for _ in range(max(0, self.in_flight - open_jobs) if open_jobs is not None else 0):
                    await self._create(http)
                await asyncio.sleep(0.5)

    async def _open_jobs(self) -> int | None:
        with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
            conn = await asyncpg.connect(self.dsn, timeout=5)
            try:
                n = await conn.fetchval("SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'cancelled')")
                return int(n)
            finally:
                await conn.close()
        return None

    async def _create(self, http: aiohttp.ClientSession) -> None:
        self._seq += 1
        body = job_body(f"k{self._seq:05d}", self.rng, self.max_target)
        try:
            async with http.post(self.server_url + "/api/jobs", json=body) as r:
                if r.status == 201:
                    self.created += 1
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        self.failed_creates += 1
