"""The agent's artifact uploads from its outbox: an older agent's entry (no size, no sha256) still goes; a local
copy that is gone or changed before it was sent is reported (the run lists it deleted, with the reason) and not
retried forever; the local copy is deleted only once the server stored the verified bytes."""

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phonefleet.agent import link
from phonefleet.agent.journal import RunJournal
from phonefleet.agent.outbox import Outbox
from phonefleet.protocol import events as ev
from tests.agent_fixtures import AgentFactory, stopped_mid_run
from tests.conftest import RunningServer, eventually

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def _info(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "kind": "screenshot", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "step_index": 0, "taken_at": datetime.now(UTC).isoformat()}


async def test_older_entries_go_and_lost_files_are_reported_not_retried(
        server: RunningServer, agent_factory: AgentFactory, tmp_path: Path) -> None:
    first = await agent_factory("pc", virtual=1)
    job, aid = await stopped_mid_run(server, first, "https://example.com/evidence")

    files = tmp_path / "pc" / "artifacts"
    files.mkdir(parents=True, exist_ok=True)
    (files / "old.png").write_bytes(PNG)  # an older agent's file: its entry says only where it is
    (files / "changed.png").write_bytes(PNG[::-1])  # not the bytes the run described
    # gone.png: described, never on disk
    box = Outbox(tmp_path / "pc" / "outbox.sqlite3")
    with box.transaction() as db:
        Outbox.insert(db, ev.ASSIGNMENT_FINISHED, {"results": [{
            "assignment_id": aid, "outcome": "completed", "result": {"duration_sec": 60.0},
            "artifacts": [_info("changed.png", PNG), _info("gone.png", PNG)]}]})
        Outbox.insert(db, ev.ARTIFACT_UPLOAD, {"assignment_id": aid, "name": "old.png"})
        for name in ("changed.png", "gone.png"):
            Outbox.insert(db, ev.ARTIFACT_UPLOAD, {"assignment_id": aid, **_info(name, PNG)})
    journal = RunJournal(box)
    journal.forget([aid])
    journal.close()
    box.close()

    again = await agent_factory("pc", virtual=1, token=first.settings.token, wait_idle=False)

    async def settled() -> dict[str, dict[str, Any]] | None:
        if len(again.outbox):
            return None
        rows = await server.ok("GET", f"/api/assignments/{aid}/artifacts")
        return {r["name"]: r for r in rows}

    rows = await eventually(settled, timeout=30)
    assert rows is not None
    assert rows["old.png"]["status"] == "stored" and rows["old.png"]["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert rows["changed.png"]["status"] == "deleted" and "changed" in rows["changed.png"]["deleted_reason"]
    assert rows["gone.png"]["status"] == "deleted" and "gone" in rows["gone.png"]["deleted_reason"]
    assert sorted(p.name for p in files.iterdir()) == ["changed.png"], "only a stored file's copy is deleted"
    (run,) = (await server.ok("GET", f"/api/jobs/{job['id']}/assignments"))["items"]
    assert run["status"] == "completed" and run["artifacts_pending"] == 0


async def test_a_file_the_server_keeps_refusing_is_reported_not_sent_forever(
        server: RunningServer, agent_factory: AgentFactory, tmp_path: Path, monkeypatch: Any) -> None:
    """The run's result described other bytes than the agent's copy holds (and its entry says): each upload is a
    422 naming sha256; the agent re-hashes its copy, finds it intact, sends it again a few times, then reports
    it and stops. The copy stays on the agent (the server never stored it)."""
    monkeypatch.setattr(link, "UPLOAD_MISMATCH_TRIES", 2)
    monkeypatch.setattr(link, "UPLOAD_BACKOFF_MAX_SEC", 0.1)
    first = await agent_factory("pc", virtual=1)
    _job, aid = await stopped_mid_run(server, first, "https://example.com/evidence")
    status, body = await server.request("POST", "/api/agent/events", token=first.settings.token, json={"events": [{
        "event": ev.ASSIGNMENT_FINISHED, "data": {"results": [{
            "assignment_id": aid, "outcome": "completed", "artifacts": [_info("odd.png", PNG)]}]}}]})
    assert status == 200 and body["results"][0]["ok"], body

    other = PNG[::-1]
    files = tmp_path / "pc" / "artifacts"
    files.mkdir(parents=True, exist_ok=True)
    (files / "odd.png").write_bytes(other)
    box = Outbox(tmp_path / "pc" / "outbox.sqlite3")
    box.put(ev.ARTIFACT_UPLOAD, {"assignment_id": aid, **_info("odd.png", other)})
    journal = RunJournal(box)
    journal.forget([aid])
    journal.close()
    box.close()

    again = await agent_factory("pc", virtual=1, token=first.settings.token, wait_idle=False)

    async def reported() -> dict[str, Any] | None:
        if len(again.outbox):
            return None
        (row,) = await server.ok("GET", f"/api/assignments/{aid}/artifacts")
        return row if row["status"] == "deleted" else None

    row = await eventually(reported, timeout=30)
    assert row is not None and "refused" in row["deleted_reason"] and "sha256" in row["deleted_reason"]
    assert row["sha256"] == hashlib.sha256(PNG).hexdigest(), "the result's description stays"
    assert (files / "odd.png").read_bytes() == other
    assert not (server.services.settings.data_dir / "artifacts" / str(aid) / "odd.png").exists()
