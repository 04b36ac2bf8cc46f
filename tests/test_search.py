"""A title search (``?search=`` and a batch filter) matches its text literally: ``%``, ``_`` and ``\\``
are characters like any other, never LIKE wildcards."""

from urllib.parse import quote

from tests.conftest import RunningServer, open_url_job

TITLES = ["100% done", "1000 done", "a_b", "axb", "back\\slash", "backslash", "plain"]


async def _waiting_jobs(server: RunningServer) -> dict[str, int]:
    """One job per title, each waiting for a phone (active: a batch can still cancel it)."""
    ids = {}
    for title in TITLES:
        job = await server.ok("POST", "/api/jobs", open_url_job(title=title, target_type="device_count",
                                                                target_value=1))
        assert job["status"] == "active"
        ids[title] = job["id"]
    return ids


async def _search(server: RunningServer, text: str) -> set[str]:
    page = await server.ok("GET", f"/api/jobs?limit=500&search={quote(text, safe='')}")
    assert page["total"] == len(page["items"])
    return {j["title"] for j in page["items"]}


async def test_search_matches_percent_underscore_and_backslash_literally(server: RunningServer) -> None:
    await _waiting_jobs(server)
    assert await _search(server, "%") == {"100% done"}
    assert await _search(server, "0%") == {"100% done"}
    assert await _search(server, "_") == {"a_b"}
    assert await _search(server, "a_b") == {"a_b"}
    assert await _search(server, "\\") == {"back\\slash"}
    assert await _search(server, "k\\s") == {"back\\slash"}
    assert await _search(server, "%%") == set()
    assert await _search(server, "DONE") == {"100% done", "1000 done"}  # still case-insensitive
    assert await _search(server, "") == set(TITLES)


async def test_schedule_jobs_search_is_literal_too(server: RunningServer) -> None:
    schedule = await server.ok("POST", "/api/schedules", {
        "name": "nightly", "interval_sec": 3600, "enabled": False,
        "template": open_url_job(title="50% nightly", target_type="device_count", target_value=1)})
    await server.ok("POST", f"/api/schedules/{schedule['id']}/run")
    base = f"/api/schedules/{schedule['id']}/jobs?search="
    assert [j["title"] for j in (await server.ok("GET", base + quote("%")))["items"]] == ["50% nightly"]
    assert (await server.ok("GET", base + quote("_")))["items"] == []


async def test_batch_cancel_by_filter_cancels_exactly_the_literal_matches(server: RunningServer) -> None:
    ids = await _waiting_jobs(server)
    for text, expected in [("_", ["a_b"]), ("%", ["100% done"]), ("\\", ["back\\slash"])]:
        result = await server.ok("POST", "/api/jobs/batch", {"action": "cancel", "filter": {"search": text}},
                                 expect=200)
        assert result["changed"] == [ids[t] for t in expected], (text, result)
    statuses = {j["title"]: j["status"] for j in (await server.ok("GET", "/api/jobs?limit=500"))["items"]}
    assert statuses == {t: "cancelled" if t in ("a_b", "100% done", "back\\slash") else "active" for t in TITLES}
