"""The agent's durable outbox and how its events travel in batches."""

from pathlib import Path

from phonefleet.agent.link import batch
from phonefleet.agent.outbox import Outbox
from phonefleet.protocol import events as ev


def test_outbox_keeps_events_across_a_restart_until_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3")
    first = box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 1, "outcome": "completed"}]})
    box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 2, "outcome": "failed"}]})
    box.close()  # the agent dies

    again = Outbox(tmp_path / "outbox.sqlite3")
    items = again.peek()
    assert [i.data["results"][0]["assignment_id"] for i in items] == [1, 2]
    again.ack([first])
    assert [i.data["results"][0]["assignment_id"] for i in again.peek()] == [2]
    assert len(again) == 1
    again.close()


def test_consecutive_reports_travel_as_one_event_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.put(ev.ASSIGNMENT_STARTED, {"items": [{"assignment_id": 1}]})
    box.put(ev.ASSIGNMENT_STARTED, {"items": [{"assignment_id": 2}]})
    box.put(ev.AGENT_PAUSE, {"scope": "agent"})
    box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 1, "outcome": "completed"}]})
    box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 2, "outcome": "completed"}]})
    groups = batch(box.peek())
    assert [(event, len(ids)) for event, _, ids in groups] == [
        (ev.ASSIGNMENT_STARTED, 2), (ev.AGENT_PAUSE, 1), (ev.ASSIGNMENT_FINISHED, 2)]
    assert [i["assignment_id"] for i in groups[2][1]["results"]] == [1, 2]
    assert box.peek()[0].data == {"items": [{"assignment_id": 1}]}, "merging never edits the stored items"
    box.close()


def test_batches_are_bounded(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    for i in range(5):
        box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": i, "outcome": "completed"}] * 3})
    groups = batch(box.peek(), limit=7)
    assert [len(g[1]["results"]) for g in groups] == [6, 6, 3]
    box.close()
