"""The state tables are the law: every status write in the store takes its guard from them (found in the
store's source, not listed by hand), and the tables themselves are whole and agree with each other."""

import ast
import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import replace
from enum import StrEnum
from typing import Any

import pytest

from phonefleet.protocol import states
from phonefleet.protocol.enums import (
    LIVE_ASSIGNMENT_STATUSES,
    AgentStatus,
    AssignmentStatus,
    DeviceState,
    FinishOutcome,
    JobStatus,
)
from phonefleet.protocol.states import TransitionError, can_transition, checked_initial, checked_sources
from phonefleet.server import store
from tests.status_writes import ROOT, Entity, Source, column_check, entities, parse, problems, writes, writes_status

STORE_MODULES = sorted(m.name for m in pkgutil.iter_modules(store.__path__))


def store_source(name: str) -> Source:
    return Source.of_module(importlib.import_module(f"phonefleet.server.store.{name}"))


@pytest.mark.parametrize("module", STORE_MODULES)
def test_every_status_write_in_the_store_takes_its_guard_from_the_tables(module: str) -> None:
    assert problems(store_source(module)) == []


def test_the_search_finds_every_status_write_known_today() -> None:
    """A floor, so a search that finds nothing (a renamed driver method, a parser gone blind) cannot pass."""
    found = {f"{statement.where.split(':')[0].removeprefix(store.__name__ + '.')} {write.kind} {write.table}"
             for module in STORE_MODULES for statement, write in writes(store_source(module), entities())}
    known = {
        "agents.create insert agents", "agents.hello update agents", "agents.touch update agents",
        "agents.set_paused update agents", "agents.expire_silent update agents",
        "assignments.claim_simple update devices", "assignments.claim_simple insert assignments",
        "assignments.claim update devices", "assignments.claim insert assignments",
        "assignments.mark_delivered update assignments", "assignments.mark_delivered_all update assignments",
        "assignments.mark_started update assignments", "assignments.record_reruns update assignments",
        "assignments.finish update assignments", "assignments.pause_job update assignments",
        "assignments.resume_job update assignments", "assignments.cancel update assignments",
        "assignments.hand_back update assignments", "devices.apply_reports insert devices",
        "devices.refresh_states update devices", "jobs.insert insert jobs", "jobs.transition update jobs",
        "jobs.update_fields update jobs", "jobs.activate update jobs", "jobs.block_dependents update jobs",
        "jobs.unblock_ready update jobs", "jobs.requeue update jobs", "jobs.complete_finished update jobs",
        "slots.overturn_lost update assignments", "slots._settle_slot update assignments",
    }
    assert known <= found, sorted(known - found)


EXAMPLE = """
from phonefleet.protocol.enums import JobStatus as J
from phonefleet.protocol.states import JOB_TRANSITIONS, JOB_INITIAL, as_guard, checked_sources, sources_of

async def pause(conn, job_id, target, sources):
    await conn.execute({sql!r}, job_id, {args})
"""


def example_problems(sql: str, args: str) -> list[str]:
    return problems(Source.of_text("example", EXAMPLE.format(sql=sql, args=args)))


PAUSE = "UPDATE jobs SET status = 'paused' WHERE id = $1 AND status = ANY($2::text[])"


@pytest.mark.parametrize(("sql", "args", "complaint"), [
    (PAUSE, "sources_of(JOB_TRANSITIONS, J.paused)", None),
    (PAUSE, "['scheduled', 'active']", "is hard-coded"),
    (PAUSE, "[str(J.scheduled), str(J.active)]", "does not come from protocol.states"),
    (PAUSE, "sources_of(JOB_TRANSITIONS, J.cancelled)", "allows moves its table does not: ['blocked -> paused']"),
    (PAUSE, "sources_of(JOB_TRANSITIONS, J.scheduled)[:0]", "its guard is empty"),
    ("UPDATE jobs SET status = 'paused' WHERE id = $1", "", "no top-level `status = ANY($n)` guard"),
    ("UPDATE jobs SET status = 'paused' WHERE id = $1 OR status = ANY($2::text[])",
     "sources_of(JOB_TRANSITIONS, J.paused)", "no top-level"),
    (PAUSE + " AND status <> 'blocked'", "sources_of(JOB_TRANSITIONS, J.paused)", "compares status with literals"),
    ("UPDATE jobs j SET status = CASE WHEN $3 THEN 'paused' ELSE 'completed' END "
     "WHERE j.id = $1 AND j.status = ANY($2::text[])",
     "sources_of(JOB_TRANSITIONS, J.paused), True", "['scheduled -> completed']"),
    ("UPDATE jobs SET status = $2 WHERE id = $1 AND status = ANY($3::text[])",
     "target, sources_of(JOB_TRANSITIONS, J.paused)", "known only at run time"),
    ("UPDATE jobs SET status = $2 WHERE id = $1 AND status = ANY($3::text[])",
     "target, checked_sources(JOB_TRANSITIONS, target, sources)", None),
    ("UPDATE jobs SET status = $2 WHERE id = $1 AND status = ANY($3::text[])",
     "target, checked_sources(JOB_TRANSITIONS, J.paused, sources)", "not given the target"),
    ("INSERT INTO jobs (title, status) VALUES ($1, 'paused')", "", "not among its table's initial states"),
    ("INSERT INTO jobs (title) VALUES ($1)", "", "status has no default"),
    ("INSERT INTO assignments (job_id) VALUES ($1)", "", None),
])
def test_the_guard_check_finds_what_breaks_a_table(sql: str, args: str, complaint: str | None) -> None:
    found = example_problems(sql, args)
    if complaint is None:
        assert found == []
    else:
        assert any(complaint in p for p in found), found


def test_a_status_write_the_search_cannot_read_fails() -> None:
    """SQL built where the search cannot follow it (a local variable) is reported, not skipped."""
    text = """
async def pause(conn, job_id):
    sql = "UPDATE jobs SET status = 'paused' WHERE id = $1"
    await conn.execute(sql, job_id)
"""
    found = problems(Source.of_text("example", text))
    assert any("no discovered statement runs" in p for p in found), found


def test_no_status_write_lives_outside_the_store() -> None:
    """All SQL lives in ``server/store``, so the search above sees every status write the project makes."""
    known = entities()
    outside = [f"{path.relative_to(ROOT)}:{node.lineno}"
               for path in sorted((ROOT / "phonefleet").rglob("*.py")) if store.__path__[0] not in str(path)
               for node in ast.walk(parse(path.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and writes_status(node.value, known)]
    assert outside == []


def test_a_table_change_the_sql_does_not_follow_fails() -> None:
    """Taking scheduled -> blocked out of the table while ``block_dependents`` still makes it."""
    jobs = entities()["jobs"]
    edited = {**jobs.table, JobStatus.scheduled: jobs.table[JobStatus.scheduled] - {JobStatus.blocked}}
    found = problems(store_source("jobs"), {**entities(), "jobs": replace(jobs, table=edited)})
    assert any("block_dependents" in p and "scheduled -> blocked" in p for p in found), found


TABLES: list[tuple[Mapping[Any, frozenset[Any]], type[StrEnum]]] = [
    (states.JOB_TRANSITIONS, JobStatus), (states.ASSIGNMENT_TRANSITIONS, AssignmentStatus),
    (states.DEVICE_TRANSITIONS, DeviceState), (states.AGENT_TRANSITIONS, AgentStatus),
]


@pytest.mark.parametrize(("table", "kind"), TABLES)
def test_every_state_has_a_row_and_every_move_goes_to_a_known_state(
        table: Mapping[Any, frozenset[Any]], kind: type[StrEnum]) -> None:
    assert set(table) == set(kind)
    for state, targets in table.items():
        assert targets <= set(kind), (state, targets)
        assert state not in targets, f"{state} -> {state} is no move (a write over itself needs no row)"


@pytest.mark.parametrize(("name", "entity"), sorted(entities().items()))
def test_the_database_allows_exactly_the_states_of_each_table(name: str, entity: Entity) -> None:
    assert column_check(name, entity.column) == {str(s) for s in entity.table}


@pytest.mark.parametrize(("name", "entity"), sorted(entities().items()))
def test_new_rows_start_in_initial_states_and_reach_every_state_from_them(name: str, entity: Entity) -> None:
    assert set(entity.initial) <= set(entity.table)
    if entity.default is not None:
        assert entity.default in {str(s) for s in entity.initial}, f"{name} defaults to {entity.default}"
    reached, frontier = set(entity.initial), set(entity.initial)
    while frontier:
        frontier = {t for s in frontier for t in entity.table[s]} - reached
        reached |= frontier
    assert reached == set(entity.table), f"{name}: no way into {set(entity.table) - reached}"


def test_an_ended_assignment_changes_only_by_a_late_result() -> None:
    table = states.ASSIGNMENT_TRANSITIONS
    for ended in states.ASSIGNMENT_ENDINGS:
        late = states.LATE_RESULTS.get(ended, frozenset())
        assert table[ended] == late - {ended}, f"{ended} leaves by {table[ended]}, late results by {late}"
    assert set(states.LATE_RESULTS) <= set(states.ASSIGNMENT_ENDINGS)


def test_an_ordinary_result_is_an_agents_outcome_and_may_end_any_live_assignment() -> None:
    assert {str(s) for s in states.ASSIGNMENT_ENDINGS} == {str(o) for o in FinishOutcome}
    assert set(LIVE_ASSIGNMENT_STATUSES) == states.ASSIGNMENT_ENDING_FROM
    for source in states.ASSIGNMENT_ENDING_FROM:
        for ending in states.ASSIGNMENT_ENDINGS:
            assert can_transition(states.ASSIGNMENT_TRANSITIONS, source, ending), (source, ending)


def test_an_ended_job_changes_only_by_a_requeue() -> None:
    assert states.JOB_TRANSITIONS[JobStatus.cancelled] == frozenset()
    assert states.JOB_TRANSITIONS[JobStatus.completed] == {JobStatus.active}
    assert states.JOB_REQUEUE_REOPENS == {JobStatus.completed} <= states.JOB_ACTIONS["requeue"]


@pytest.mark.parametrize(("action", "targets"), [
    ("pause", {JobStatus.paused}), ("resume", {JobStatus.active, JobStatus.scheduled}),
    ("cancel", {JobStatus.cancelled}),
])
def test_an_operator_action_makes_only_moves_the_job_table_lists(action: str, targets: set[JobStatus]) -> None:
    for source in states.JOB_ACTIONS[action]:
        for target in targets:
            assert target in states.JOB_TRANSITIONS[source], (action, source, target)


@pytest.mark.parametrize(("named", "table", "target"), [
    (states.JOB_ACTIVATES_FROM, states.JOB_TRANSITIONS, JobStatus.active),
    (states.JOB_UNBLOCKS_FROM, states.JOB_TRANSITIONS, JobStatus.scheduled),
    (states.JOB_REQUEUE_REOPENS, states.JOB_TRANSITIONS, JobStatus.active),
    (states.ASSIGNMENT_RERUN_FROM, states.ASSIGNMENT_TRANSITIONS, AssignmentStatus.running),
    (states.ASSIGNMENT_HAND_BACK_FROM, states.ASSIGNMENT_TRANSITIONS, AssignmentStatus.cancelled),
    (states.ASSIGNMENT_UNSTARTED, states.ASSIGNMENT_TRANSITIONS, AssignmentStatus.cancelled),
    (states.DEVICE_CLAIM_FROM, states.DEVICE_TRANSITIONS, DeviceState.busy),
])
def test_a_named_guard_is_made_of_moves_its_table_lists(
        named: frozenset[Any], table: Mapping[Any, frozenset[Any]], target: StrEnum) -> None:
    assert named and all(can_transition(table, s, target) for s in named), (named, target)


def test_a_move_known_only_at_run_time_is_checked_against_its_table() -> None:
    assert checked_sources(states.JOB_TRANSITIONS, JobStatus.paused, ["scheduled", "active"]) == ["active", "scheduled"]
    with pytest.raises(TransitionError, match="job cannot go from 'cancelled' to 'paused'"):
        checked_sources(states.JOB_TRANSITIONS, JobStatus.paused, ["cancelled"])
    assert checked_initial(states.JOB_INITIAL, JobStatus.active) == JobStatus.active
    with pytest.raises(TransitionError, match="job cannot go from '\\(new\\)' to 'paused'"):
        checked_initial(states.JOB_INITIAL, JobStatus.paused)
