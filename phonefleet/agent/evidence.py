"""What a run leaves behind besides its result: its step timeline and its span of the phone's logcat.

``StepLog`` records each plan step as the runner starts and ends it (a step cut short by a failure, a
timeout or a cancel is closed with that outcome). ``LogcatSpan`` notes the phone's own clock when the run
starts and, at its end, captures ``logcat -d -v threadtime -T <start>``: bounded to its last
``LOGCAT_MAX_BYTES``, gzip-compressed, kept as the run's ``logcat`` artifact, with its crashes and ANRs.
"""

import asyncio
import gzip
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from phonefleet.agent.actions import Shell, StepContext, StepError
from phonefleet.protocol.plan import Step, UnknownStep
from phonefleet.protocol.timeline import (
    LOGCAT_KIND,
    LOGCAT_MAX_BYTES,
    LOGCAT_TRUNCATED_MARK,
    OUTPUT_TAIL_CHARS,
    Crash,
    StepOutcome,
    StepRecord,
    find_crashes,
    logcat_artifact_name,
)

log = logging.getLogger(__name__)

RUN_OUTPUT_BUDGET = 64 * 1024
"""The output tails of one run's steps together keep at most this many characters: the last steps (the one
that failed among them) keep theirs whole, earlier ones give way, so a result stays small enough to travel
in a batch (``link.batch`` weighs them)."""


def evidence_weight(item: dict[str, object]) -> int:
    """About how many bytes a finished report's evidence adds to a message (for ``link.batch``)."""
    steps = item.get("steps")
    if not isinstance(steps, list) or not steps:
        return 0
    return sum(len(s.get("output_tail") or "") + len(s.get("error") or "") + 200 for s in steps if isinstance(s, dict))


@dataclass
class _Open:
    index: int
    type: str
    name: str | None
    started_at: datetime


class StepLog:
    """The steps of one run, in the order they ran."""

    def __init__(self, budget: int = RUN_OUTPUT_BUDGET) -> None:
        self._records: list[StepRecord] = []
        self._open: _Open | None = None
        self.budget = budget

    @property
    def records(self) -> list[StepRecord]:
        """The steps, their output tails within the run's budget (the newest first served)."""
        left = self.budget
        kept: list[StepRecord] = []
        for record in reversed(self._records):
            tail = record.output_tail or ""
            fitted = record if len(tail) <= left else record.model_copy(
                update={"output_tail": tail[len(tail) - left:] or None})
            left -= len(fitted.output_tail or "")
            kept.append(fitted)
        return kept[::-1]

    def begin(self, index: int, step: Step | UnknownStep) -> None:
        name = None if isinstance(step, UnknownStep) else step.name
        self._open = _Open(index, step.type[:100], name[:200] if name else None, datetime.now(UTC))

    def end(self, ctx: StepContext, outcome: StepOutcome = StepOutcome.completed, error: str | None = None,
            exc: BaseException | None = None) -> None:
        """Close the open step (if any) with this outcome; a ``StepError`` from a command's exit says its code
        and output (the context's are those of the last command that returned)."""
        opened, self._open = self._open, None
        if opened is None:
            return
        exit_code: int | None = ctx.exit_code
        tail = ctx.output_tail
        if isinstance(exc, StepError) and exc.exit_code is not None:
            exit_code, tail = exc.exit_code, exc.output or tail
        self._records.append(StepRecord(
            step_index=opened.index, type=opened.type, name=opened.name, started_at=opened.started_at,
            finished_at=datetime.now(UTC), outcome=outcome, exit_code=exit_code,
            output_tail=tail[-OUTPUT_TAIL_CHARS:] or None, error=error[:10_000] if error else None))


EPOCH = re.compile(r"^\s*(\d{6,12})(?:\.(\d+))?")
COMPRESS_IN_THREAD_FROM = 64 * 1024
"""A logcat this large is compressed in a thread (a few milliseconds per 100 KB); a smaller one costs less than
the hop."""


class LogcatSpan:
    """The phone's logcat from the start of a run to its end."""

    def __init__(self, phone: Shell, clock: Callable[[], float | None] = lambda: None) -> None:
        self.phone = phone
        self.clock = clock
        self.since: str | None = None
        """The run's start by the phone's clock, as ``logcat -T`` takes it (epoch ``seconds.millis``)."""

    async def mark_start(self) -> None:
        """The phone's clock now: from its health probes' reading of it (no round trip), else asked (toybox
        ``date``; ``%N`` where it knows it)."""
        known = self.clock()
        if known is not None:
            self.since = f"{known:.3f}"
            return
        try:
            _code, output = await self.phone.shell("date +%s.%N", timeout=5)
        except Exception as exc:  # a phone that will not tell the time: the run goes on without its logcat
            log.warning("could not read the phone's clock", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        match = EPOCH.match(output)
        if match is None:
            log.warning("the phone's clock is unreadable", extra={"output": output[:100]})
            return
        millis = (match.group(2) or "").ljust(3, "0")[:3]
        self.since = f"{match.group(1)}.{millis}"

    async def capture(self, ctx: StepContext) -> list[Crash]:
        """Keep the run's logcat as its ``logcat`` artifact; answers the crashes and ANRs in it."""
        if self.since is None:
            return []
        try:
            raw = await self.phone.shell_bytes(f"logcat -d -v threadtime -T '{self.since}'", timeout=15)
        except Exception as exc:
            log.warning("logcat capture failed", extra={"error": f"{type(exc).__name__}: {exc}",
                                                        "assignment_id": ctx.assignment_id})
            return []
        if len(raw) > LOGCAT_MAX_BYTES:
            kept = raw[-LOGCAT_MAX_BYTES:]
            cut = kept.find(b"\n")
            kept = kept[cut + 1:] if 0 <= cut < 4096 else kept
            note = f"{LOGCAT_TRUNCATED_MARK} {len(kept)} of {len(raw)} bytes\n".encode()
            raw = note + kept
        text = raw.decode(errors="replace")
        crashes = find_crashes(text.splitlines())
        ctx.step_index = None
        packed = (gzip.compress(raw, compresslevel=6) if len(raw) < COMPRESS_IN_THREAD_FROM
                  else await asyncio.to_thread(gzip.compress, raw, 6))
        await ctx.save_artifact(logcat_artifact_name(ctx.assignment_id), packed, LOGCAT_KIND)
        return crashes
