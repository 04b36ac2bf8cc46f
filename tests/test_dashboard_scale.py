"""The dashboard at fleet scale: 1,000 phones (10 simulated agents x 100) and 200 jobs, in headless Chromium.

While the server pushes live updates (jobs created and completing, phones going busy, idle, paused), the page
keeps up (counts, rows, the windowed phones table) and a click on a job's expand button, Tab/Enter on
"New job" and a scroll to the last phone all respond, within generous bounds. How fast (long tasks, response
times) is a benchmark's figure: ``python -m bench.dashboard`` runs the same scenario
(``phonefleet.sim.dashboard_scale``). Screenshots at a laptop and a tablet width go to ``tests/artifacts/``
(``scale-*.png``).
"""

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from phonefleet.sim.dashboard_scale import (
    COMPLETING_JOBS,
    LONG_RUNNING_JOBS,
    PAUSED_JOBS,
    open_page,
    run_scenario,
)
from tests.conftest import RunningServer
from tests.dashboard_helpers import ARTIFACTS

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.timeout(240)

RESPOND_TIMEOUT_MS = 15_000  # "it responds", on a loaded machine; how fast is bench/dashboard.py's figure


@pytest.fixture
async def page(browser: "Browser") -> AsyncIterator["Page"]:
    context, p, errors = await open_page(browser)
    yield p
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def test_a_thousand_phones_and_two_hundred_jobs_keep_the_page_responsive(
        server: RunningServer, page: "Page") -> None:
    report = await run_scenario(server, page, respond_timeout_ms=RESPOND_TIMEOUT_MS, artifacts=ARTIFACTS)
    assert report.driver_rounds > 0, report
    # the phones table is windowed: only the rows near the viewport exist, and scrolling brought the last one
    assert 0 < report.phones_rendered < 150, report
    jobs = report.jobs_by_status
    assert (jobs["active"], jobs["paused"]) == (LONG_RUNNING_JOBS, PAUSED_JOBS), jobs
    assert 20 < jobs["completed"] <= COMPLETING_JOBS, jobs  # every wave the driver made completed
    assert sum(jobs.values()) == LONG_RUNNING_JOBS + PAUSED_JOBS + jobs["completed"], jobs
