"""``GET /api/stats`` (counts, success rate, run time and queue wait over a window) and ``GET /metrics``
(Prometheus text, with gauges counted in the database at scrape time)."""

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from phonefleet.protocol import events as ev
from phonefleet.sim.agent import SimAgent, SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server: RunningServer) -> tuple[str, Samples]:
    """The content type and every sample, keyed by name and sorted labels."""
    async with server.session.get(server.url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
        content_type = r.headers["Content-Type"]
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return content_type, samples


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def run_job(server: RunningServer, agent: SimAgent, outcomes: list[str]) -> dict[str, Any]:
    """A job on every phone of ``agent``; each phone starts it, then ends with its outcome in turn (the
    cancelled ones last, by cancelling the job: an agent does not cancel work on its own)."""
    job: dict[str, Any] = await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == len(outcomes))
    ids = sorted(agent.orders)
    assert (await agent.start(ids))["ok"]
    for outcome in sorted(set(outcomes) - {"cancelled"}):
        mine = [i for i, o in zip(ids, outcomes, strict=True) if o == outcome]
        extra = {} if outcome == "completed" else {"error": "boom", "retryable": False}
        assert (await agent.finish(mine, outcome, **extra))["ok"]
    if "cancelled" in outcomes:
        await server.ok("PATCH", f"/api/jobs/{job['id']}", {"status": "cancelled"})

    async def ended() -> bool:
        counts = (await server.ok("GET", "/api/stats"))["assignments"]
        return all(counts[o] == outcomes.count(o) for o in set(outcomes))

    await eventually(ended)
    return job


async def set_times(server: RunningServer, job_id: int, waits: list[float], runs: list[float]) -> None:
    """Move the job's activation 1,000 s back; assignment i starts ``waits[i]`` s after it and runs ``runs[i]`` s."""
    async with server.services.pool.acquire() as conn:
        await conn.execute(
            "UPDATE jobs SET activated_at = date_trunc('second', now()) - interval '1000 seconds' WHERE id = $1",
            job_id)
        await conn.execute(
            """UPDATE assignments a SET started_at = j.activated_at + make_interval(secs => t.wait),
                      finished_at = j.activated_at + make_interval(secs => t.wait + t.run)
               FROM jobs j, (SELECT id, row_number() OVER (ORDER BY id) AS n FROM assignments
                             WHERE job_id = $1) o,
                    unnest($2::float8[], $3::float8[]) WITH ORDINALITY AS t(wait, run, n)
               WHERE a.job_id = $1 AND j.id = $1 AND o.id = a.id AND t.n = o.n""",
            job_id, waits, runs)


async def test_stats_success_rate_counts_failures_and_timeouts_not_cancellations(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 6)
    await run_job(server, agent, ["completed", "completed", "completed", "failed", "timed_out", "cancelled"])
    stats = await server.ok("GET", "/api/stats")
    assert stats["window_sec"] == 86_400
    assert stats["success_rate"] == pytest.approx(3 / 5)
    assert stats["assignments"]["completed"] == 3 and stats["assignments"]["cancelled"] == 1
    run = stats["run_time"]
    assert run["count"] == 3, "completed ones only"
    assert 0 <= run["avg_sec"] <= run["p95_sec"] + 1e-9
    assert stats["queue_wait"]["count"] == 6, "every started assignment, whatever its end"
    assert stats["queue_wait"]["avg_sec"] >= 0


async def test_stats_run_time_and_queue_wait_from_the_rows_times(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 4)
    job = await run_job(server, agent, ["completed", "completed", "completed", "failed"])
    await set_times(server, job["id"], waits=[4, 8, 12, 16], runs=[10, 20, 30, 50])
    stats = await server.ok("GET", "/api/stats?window_sec=3600")
    assert stats["window_sec"] == 3600
    assert stats["success_rate"] == 0.75
    # percentile_cont: 95 % of the way along the sorted values, interpolated.
    assert stats["run_time"] == {"count": 3, "avg_sec": pytest.approx(20.0), "p95_sec": pytest.approx(29.0)}
    assert stats["queue_wait"] == {"count": 4, "avg_sec": pytest.approx(10.0), "p95_sec": pytest.approx(15.4)}


async def test_stats_window_leaves_out_older_assignments(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 2)
    job = await run_job(server, agent, ["completed", "failed"])
    await set_times(server, job["id"], waits=[1, 2], runs=[3, 4])  # everything ended ~990 s ago
    stats = await server.ok("GET", "/api/stats?window_sec=600")
    assert stats["success_rate"] is None
    assert stats["run_time"] == {"count": 0, "avg_sec": None, "p95_sec": None}
    assert stats["queue_wait"] == {"count": 0, "avg_sec": None, "p95_sec": None}
    assert stats["assignments"]["completed"] == 1, "counts by state are not windowed"


async def test_queue_wait_is_never_negative(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    job = await run_job(server, agent, ["completed"])
    await set_times(server, job["id"], waits=[-30], runs=[5])  # a phone's clock behind the server's
    stats = await server.ok("GET", "/api/stats")
    assert stats["queue_wait"] == {"count": 1, "avg_sec": 0.0, "p95_sec": 0.0}


async def test_stats_without_assignments_has_no_rate(server: RunningServer) -> None:
    stats = await server.ok("GET", "/api/stats")
    assert stats["success_rate"] is None
    assert stats["run_time"] == {"count": 0, "avg_sec": None, "p95_sec": None}


@pytest.mark.parametrize("value", ["0", "59", "31536001", "text", "1.5"])
async def test_stats_window_sec_is_validated(server: RunningServer, value: str) -> None:
    status, body = await server.request("GET", f"/api/stats?window_sec={value}")
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"
    assert [d["field"] for d in body["error"]["details"]] == ["window_sec"]


async def test_stats_window_sec_is_documented(server: RunningServer) -> None:
    doc = await server.ok("GET", "/api/openapi.json")
    params = doc["paths"]["/api/stats"]["get"].get("parameters", [])
    assert "window_sec" in {p["name"] for p in params}


async def test_metrics_gauges_count_the_fleet_at_scrape_time(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 3)
    await server.add_agent("never-connected")
    await run_job(server, agent, ["completed", "completed", "failed"])

    content_type, samples = await scrape(server)
    assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
    assert sample(samples, "phonefleet_assignments", status="completed") == 2
    assert sample(samples, "phonefleet_assignments", status="failed") == 1
    assert sample(samples, "phonefleet_assignments", status="running") == 0
    assert sample(samples, "phonefleet_jobs", status="completed") == 1
    assert sample(samples, "phonefleet_jobs", status="active") == 0
    assert sample(samples, "phonefleet_devices", state="idle") == 3
    assert sample(samples, "phonefleet_devices", state="offline") == 0
    assert sample(samples, "phonefleet_agents_connected") == 1
    assert sample(samples, "phonefleet_connected_agents") == 1
    assert sample(samples, "phonefleet_assignments_created_total") == 3
    assert sample(samples, "phonefleet_assignments_finished_total", status="completed") == 2
    assert sample(samples, "phonefleet_assignments_finished_total", status="failed") == 1
    assert sample(samples, "phonefleet_fill_seconds_count") >= 1

    # A new job shows at the next scrape, without anything else happening.
    await server.ok("POST", "/api/jobs", open_url_job(title="second"))
    _, samples = await scrape(server)
    assert sample(samples, "phonefleet_jobs", status="active") == 1


async def test_metrics_count_agent_and_dashboard_socket_events(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    await agent.call(ev.AGENT_HEARTBEAT, {"running": []})
    dashboard = SimDashboard(server.url, ADMIN)
    await dashboard.connect()
    try:
        ack = await dashboard.sio.call("no:such-event", {}, namespace=ev.DASHBOARD_NAMESPACE, timeout=10)
        assert ack["error"]["code"] == "unknown_event"
    finally:
        await dashboard.disconnect()
    await agent.call("no:such-event", {})

    _, samples = await scrape(server)
    events = "phonefleet_socket_events_total"
    assert sample(samples, events, namespace="agent", event=ev.AGENT_HELLO) == 1
    assert sample(samples, events, namespace="agent", event=ev.AGENT_HEARTBEAT) >= 1
    assert sample(samples, events, namespace="agent", event="unknown") == 1
    assert sample(samples, events, namespace="dashboard", event="unknown") == 1


async def test_agents_connected_is_cluster_wide_connected_agents_per_node(
    server_factory: Callable[..., Awaitable[RunningServer]],
) -> None:
    first = await server_factory()
    second = await server_factory()
    await first.sim_agent("pc", 2)
    _, on_first = await scrape(first)
    _, on_second = await scrape(second)
    assert sample(on_first, "phonefleet_connected_agents") == 1
    assert sample(on_second, "phonefleet_connected_agents") == 0, "no socket on this node"
    assert sample(on_first, "phonefleet_agents_connected") == 1
    assert sample(on_second, "phonefleet_agents_connected") == 1, "seen by the database, whichever node"
    assert sample(on_second, "phonefleet_devices", state="idle") == 2


async def test_metrics_need_no_token(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as session, session.get(server.url + "/metrics") as r:
        assert r.status == 200
        assert "phonefleet_agents_connected" in await r.text()
