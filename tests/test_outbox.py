"""The agent's durable outbox and how its events travel in batches."""

from pathlib import Path
from typing import cast

from phonefleet.agent.link import MEMORY_ID, Handlers, ServerLink, batch
from phonefleet.agent.outbox import Outbox
from phonefleet.protocol import events as ev
from phonefleet.protocol.enums import AssignmentStatus, FinishOutcome


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


def test_reports_between_barriers_travel_as_one_event_per_kind(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    box.put(ev.ASSIGNMENT_STARTED, {"items": [{"assignment_id": 1}]})
    box.put(ev.ASSIGNMENT_PROGRESS, {"items": [{"assignment_id": 1, "progress": 0.5}]})
    box.put(ev.ASSIGNMENT_STARTED, {"items": [{"assignment_id": 2}]})
    box.put(ev.ASSIGNMENT_PROGRESS, {"items": [{"assignment_id": 2, "progress": 0.5}]})
    box.put(ev.ASSIGNMENT_PROGRESS, {"items": [{"assignment_id": 2, "progress": 0.9}]})
    box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 1, "outcome": "completed"}]})
    box.put(ev.AGENT_PAUSE, {"scope": "agent"})  # a barrier: nothing moves across it
    box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 2, "outcome": "completed"}]})
    groups = batch(box.peek())
    assert [event for event, _, _ in groups] == [
        ev.ASSIGNMENT_STARTED, ev.ASSIGNMENT_PROGRESS, ev.ASSIGNMENT_FINISHED, ev.AGENT_PAUSE,
        ev.ASSIGNMENT_FINISHED]
    assert [i["assignment_id"] for i in groups[0][1]["items"]] == [1, 2]
    assert groups[1][1]["items"] == [{"assignment_id": 2, "progress": 0.9}], "latest only; none for #1 (finished)"
    assert sorted(id_ for _, _, ids in groups for id_ in ids) == [i.id for i in box.peek()], "every item acked once"
    assert box.peek()[0].data == {"items": [{"assignment_id": 1}]}, "merging never edits the stored items"
    box.close()


def test_progress_superseded_by_a_finish_leaves_with_the_finish(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    progress = box.put(ev.ASSIGNMENT_PROGRESS, {"items": [{"assignment_id": 7, "progress": 0.5}]})
    box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 7, "outcome": "completed"}]})
    ((event, data, ids),) = batch(box.peek())
    assert event == ev.ASSIGNMENT_FINISHED and progress in ids
    assert data["results"][0]["assignment_id"] == 7
    box.close()


def test_batches_are_bounded(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    for i in range(5):
        box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": i, "outcome": "completed"}] * 3})
    groups = batch(box.peek(), limit=7)
    assert [len(g[1]["results"]) for g in groups] == [6, 6, 3]
    assert [len(g[2]) for g in groups] == [2, 2, 1]
    box.close()


async def test_a_runs_journal_entry_leaves_with_its_result_and_survives_a_crash_otherwise(tmp_path: Path) -> None:
    import asyncio
    from datetime import UTC, datetime

    from phonefleet.agent.journal import RunJournal
    from phonefleet.protocol.enums import OnInterrupt

    box = Outbox(tmp_path / "o.sqlite3")
    journal = RunJournal(box)
    orders = [ev.AssignmentOrder(
        assignment_id=i, job_id=7, device_id=1, serial="phone", title="t", plan=[], priority=0, timeout_sec=60,
        attempt=2, status=AssignmentStatus.delivered, on_interrupt=OnInterrupt.rerun if i == 3 else OnInterrupt.fail)
        for i in (1, 2, 3)]
    started = datetime(2026, 1, 1, tzinfo=UTC)
    # Many phones starting at once share group commits; each returns once its entry is written.
    await asyncio.gather(*(journal.step_started(o, 0, "open_url", started) for o in orders))
    await journal.step_started(orders[1], 1, "screenshot", started)
    journal.finish(ev.FinishedItem(assignment_id=1, outcome=FinishOutcome.completed))
    journal.close()
    box.close()  # the agent dies with runs 2 and 3 on a step

    again = Outbox(tmp_path / "o.sqlite3")
    entries = RunJournal(again).entries()
    assert [(e.assignment_id, e.step_index, e.step_type, e.attempt, e.on_interrupt, e.started_at)
            for e in entries] == [(2, 1, "screenshot", 2, OnInterrupt.fail, started),
                                  (3, 0, "open_url", 2, OnInterrupt.rerun, started)]
    assert [i.data["results"][0]["assignment_id"] for i in again.peek()] == [1]
    again.close()


def test_results_with_long_step_output_travel_in_batches_of_bounded_size(tmp_path: Path) -> None:
    """A result's steps carry their output tails: a batch weighs them, so a message stays far below the server's
    1 MiB body limit (polling) and its socket buffer, however much the runs printed."""
    from phonefleet.agent.evidence import evidence_weight
    from phonefleet.agent.link import BATCH_EVIDENCE_BYTES

    box = Outbox(tmp_path / "o.sqlite3")
    steps = [{"step_index": i, "type": "shell", "outcome": "completed", "output_tail": "x" * 8192} for i in range(8)]
    for i in range(20):  # 20 results of 64 KiB of output each
        box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": i, "outcome": "completed", "steps": steps}]})
    groups = batch(box.peek())
    assert len(groups) > 1 and sum(len(g[1]["results"]) for g in groups) == 20
    assert all(sum(evidence_weight(r) for r in g[1]["results"]) <= BATCH_EVIDENCE_BYTES for g in groups)
    assert sorted(i for g in groups for i in g[2]) == [item.id for item in box.peek()]
    box.close()


def test_a_runs_step_output_is_kept_within_its_budget_newest_steps_first() -> None:
    from phonefleet.agent.actions import StepContext
    from phonefleet.agent.evidence import StepLog
    from phonefleet.protocol.plan import TapStep

    ctx = StepContext(serial="s", phone=None, assignment_id=1, artifacts_dir=Path("/nonexistent"))  # type: ignore[arg-type]
    log = StepLog(budget=10_000)
    for index in range(3):
        log.begin(index, TapStep(type="tap", x=1, y=2))
        ctx.begin_step(index)
        ctx.exit_code, ctx.output_tail = 0, str(index) * 6000
        log.end(ctx)
    tails = [r.output_tail for r in log.records]
    assert tails == [None, "1" * 4000, "2" * 6000]
    assert [r.exit_code for r in log.records] == [0, 0, 0]


async def test_runs_progress_rides_the_next_window_from_memory_and_comes_back_if_it_was_not_sent(
        tmp_path: Path) -> None:
    """Progress is not an outbox row: the link keeps each run's latest and appends it to the next window (none
    for a run whose end is in that window); a window that could not be sent gives it back, unless a newer
    report came meanwhile."""
    box = Outbox(tmp_path / "outbox.sqlite3")
    link = ServerLink("http://127.0.0.1:9", "pfagt_x", box, cast(Handlers, None), artifacts_dir=tmp_path)

    def report(assignment_id: int, progress: float) -> None:
        link.progress(ev.AssignmentProgress(items=[ev.ProgressItem(assignment_id=assignment_id, step_index=0,
                                                                   step_count=2, progress=progress)]))

    report(1, 0.25)
    report(1, 0.5)
    report(2, 0.5)
    box.put(ev.ASSIGNMENT_FINISHED, {"results": [{"assignment_id": 2, "outcome": "completed"}]})
    assert len(box) == 1, "no row for progress"
    events, taken = link._with_progress(box.peek(), full=False)
    assert [(e, d, ids) for e, d, ids in batch(events) if e == ev.ASSIGNMENT_PROGRESS] == [
        (ev.ASSIGNMENT_PROGRESS, {"items": [{"assignment_id": 1, "step_index": 0, "step_count": 2, "progress": 0.5}]},
         [MEMORY_ID])], "the latest of run 1; none for run 2, which ends in this window"
    assert link._with_progress([], full=False) == ([], {}), "taken: not sent twice"
    report(1, 0.75)
    link._restore_progress(taken)  # the window was not sent
    events, _ = link._with_progress([], full=False)
    assert [i["progress"] for e in events for i in e.data["items"]] == [0.75], "the newer report wins"
    report(3, 0.1)
    assert link._with_progress(box.peek(), full=True)[1] == {}, "a full window: a run's start may be behind it"
    box.close()
