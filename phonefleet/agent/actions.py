"""The step registry: what each plan step does to a phone over ADB.

Built-in steps are named here as ``module:function`` strings and imported on first use; each takes its own
protocol model (``open_url_step(ctx, step: OpenUrlStep)``). Third-party steps come from the
``phonefleet.steps`` entry-point group (the name is the step ``type``) and receive the ``UnknownStep`` the
protocol could not model. A step raises ``StepError`` to fail the assignment with a clear message (and
says whether a retry elsewhere could help).
"""

import asyncio
import hashlib
import importlib
import logging
import re
import shlex
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from phonefleet.agent.phone import Progress
from phonefleet.protocol.artifacts import NAME_PATTERN, ArtifactInfo, ArtifactKind
from phonefleet.protocol.plan import (
    STEP_TYPES,
    InstallApkStep,
    KeyeventStep,
    LaunchAppStep,
    OpenUrlStep,
    RunTestsStep,
    ScreenshotStep,
    ShellStep,
    Step,
    StopAppStep,
    SwipeStep,
    TapStep,
    TextStep,
    UnknownStep,
    WaitStep,
)
from phonefleet.protocol.timeline import OUTPUT_TAIL_CHARS, logcat_artifact_name

ENTRY_POINT_GROUP = "phonefleet.steps"
log = logging.getLogger(__name__)


class Shell(Protocol):
    """What a step needs of a phone (``phone.AdbPhone``)."""

    async def shell(self, command: str, timeout: float | None = None) -> tuple[int, str]: ...

    async def shell_stream(self, command: str, on_line: Callable[[str], None],
                           timeout: float | None = None) -> tuple[int, str]: ...

    async def shell_bytes(self, command: str, timeout: float | None = None) -> bytes: ...

    async def push(self, local: Path, remote: str, progress: Progress | None = None) -> None: ...


class Fetch(Protocol):
    """Downloads a URL to a file on this PC; ``progress`` hears the bytes received so far."""

    async def __call__(self, url: str, dest: Path, progress: Progress | None = None) -> None: ...


class StepError(Exception):
    def __init__(self, message: str, *, code: str = "step_failed", retryable: bool = True,
                 exit_code: int | None = None, output: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable
        self.exit_code = exit_code
        """The failing command's exit code and output, when a command's exit failed the step."""
        self.output = output


@dataclass
class StepContext:
    serial: str
    phone: Shell
    assignment_id: int
    artifacts_dir: Path
    allow_shell: bool = False
    cancelled: Callable[[], bool] = lambda: False
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    fetch: Fetch | None = None
    step_index: int | None = None
    """The plan step running now (set by the runner); None before the first and after the last."""
    exit_code: int | None = None
    """The exit code of the last command the current step ran (``shell``); None: it ran none yet."""
    output_tail: str = ""
    """What the current step's commands printed, its last ``OUTPUT_TAIL_CHARS``."""
    step_fraction: float = 0.0
    """How far the current step is, 0..1, as the step itself knows it (a wait by its clock, an install by its
    phase); the runner's progress ticker reports it. A step that never sets it stays at 0 until it ends."""
    step_note: str | None = None
    """A word on where the current step is ("downloading", "installing"), shown with its progress."""

    def begin_step(self, index: int) -> None:
        self.step_index, self.exit_code, self.output_tail = index, None, ""
        self.step_fraction, self.step_note = 0.0, None

    def advance(self, fraction: float, note: str | None = None) -> None:
        """Say how far the current step is (no message is sent here: the runner's ticker reads it)."""
        self.step_fraction = min(1.0, max(self.step_fraction, fraction))
        if note is not None:
            self.step_note = note

    async def shell(self, command: str, timeout: float | None = 60,
                    on_line: Callable[[str], None] | None = None) -> tuple[int, str]:
        """Run a command on the phone, keeping its exit code and the tail of its output for the step timeline;
        ``on_line`` hears each line of the output as the phone prints it (a step's progress follows it)."""
        if on_line is None:
            code, output = await self.phone.shell(command, timeout=timeout)
        else:
            code, output = await self.phone.shell_stream(command, on_line, timeout=timeout)
        self.exit_code = code
        self.output_tail = (self.output_tail + output)[-OUTPUT_TAIL_CHARS:]
        return code, output

    def add_artifact(self, name: str, data: bytes, kind: str) -> dict[str, Any]:
        """Keep a file of this run: written under ``artifacts_dir`` and described by what proves it arrived
        intact (its size and sha256, taken here, where the bytes were made), its step and when it was taken.
        The runner queues each one through the outbox when the run ends. The file is written on the calling
        thread (a step of a plugin may call this); the built-in steps use ``save_artifact``."""
        self._check_artifact(name, kind)
        return self._record_artifact(name, kind, _write_artifact(self.artifacts_dir / name, data))

    async def save_artifact(self, name: str, data: bytes, kind: str) -> dict[str, Any]:
        """``add_artifact`` with the file written and hashed in a thread: making a file took 0.4 ms of the event
        loop on ext4, and at 500 phones, where every run ends with its logcat, that was 8 % of the loop."""
        self._check_artifact(name, kind)
        return self._record_artifact(name, kind, await asyncio.to_thread(_write_artifact, self.artifacts_dir / name,
                                                                         data))

    def _check_artifact(self, name: str, kind: str) -> None:
        if kind not in ArtifactKind.__members__ or not re.match(NAME_PATTERN, name):
            raise StepError(f"artifact {name!r} of kind {kind!r}: a kind is one of {', '.join(ArtifactKind)}; a "
                            "name is letters, digits, '.', '_' and '-'", code="bad_artifact", retryable=False)

    def _record_artifact(self, name: str, kind: str, written: tuple[int, str]) -> dict[str, Any]:
        size, sha256 = written
        artifact = {"kind": kind, "file": name, "bytes": size, "sha256": sha256,
                    "step_index": self.step_index, "taken_at": datetime.now(UTC).isoformat()}
        self.artifacts.append(artifact)
        return artifact

    def artifact_infos(self) -> list[ArtifactInfo]:
        """This run's files as the protocol describes them (the run's result and the outbox carry these)."""
        infos = []
        for a in self.artifacts:
            try:
                infos.append(ArtifactInfo(name=a["file"], kind=a["kind"], bytes=a["bytes"], sha256=a["sha256"],
                                          step_index=a.get("step_index"), taken_at=a.get("taken_at")))
            except (KeyError, TypeError, ValidationError):  # a step that wrote the list itself: its file stays here
                log.warning("artifact not described; it is not uploaded", extra={"artifact": repr(a)[:200]})
        return infos


def _write_artifact(path: Path, data: bytes) -> tuple[int, str]:
    """Write a run's file; its size and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


def left_behind(artifacts_dir: Path, assignment_id: int) -> list[ArtifactInfo]:
    """The files a run cut short by an agent crash had made (``{id}-…``, as ``add_artifact`` names them),
    described now, so its evidence is uploaded with its ``interrupted`` result rather than left on this PC.
    Their step is unknown; a file the crash cut mid-write is sent as it is (its sha256 is of those bytes)."""
    infos = []
    for path in sorted(artifacts_dir.glob(f"{assignment_id}-*")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        kind = (ArtifactKind.logcat if path.name == logcat_artifact_name(assignment_id)
                else ArtifactKind.screenshot if path.suffix == ".png" else ArtifactKind.file)
        infos.append(ArtifactInfo(name=path.name, kind=kind, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                  taken_at=datetime.fromtimestamp(path.stat().st_mtime, UTC)))
    return infos


StepResult = dict[str, Any] | None
BoundStep = Callable[[StepContext], Awaitable[StepResult]]
"""A plan step bound to the function that runs it: all that is left is the phone to run it on."""

BUILTIN: dict[str, str] = {name: f"phonefleet.agent.actions:{name}_step" for name in STEP_TYPES}
_STEP = TypeAdapter[Step](Step)


class Registry:
    def __init__(self) -> None:
        self._loaded: dict[str, Callable[[StepContext, Any], Awaitable[StepResult]]] = {}
        self._external: dict[str, str] | None = None

    def _entry_points(self) -> dict[str, str]:
        if self._external is None:
            self._external = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._external

    def known(self) -> list[str]:
        return sorted({*BUILTIN, *self._entry_points()})

    def bind(self, step: Step | UnknownStep) -> BoundStep:
        """The function for this step's type, bound to the step. A built-in type whose fields do not fit its model
        (a newer server's) and a type no one here knows fail their assignment, never the agent."""
        if isinstance(step, UnknownStep) and step.type in BUILTIN:
            try:
                _STEP.validate_python(step.fields)
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'step'}: {e['msg']}"
                                     for e in exc.errors())
                raise StepError(f"{step.type} step this agent cannot read: {problems}", code="invalid_step",
                                retryable=False) from None
        fn = self._function(step.type)

        async def bound(ctx: StepContext) -> StepResult:
            return await fn(ctx, step)

        return bound

    def _function(self, step_type: str) -> Callable[[StepContext, Any], Awaitable[StepResult]]:
        """Imported on first use; the registry hands each function only steps of its own type."""
        if step_type in self._loaded:
            return self._loaded[step_type]
        target = BUILTIN.get(step_type) or self._entry_points().get(step_type)
        if target is None:
            raise StepError(f"unknown step type {step_type!r}", code="unknown_step", retryable=False)
        module_name, _, attr = target.partition(":")
        fn: Callable[[StepContext, Any], Awaitable[StepResult]] = getattr(importlib.import_module(module_name), attr)
        self._loaded[step_type] = fn
        return fn


async def _run(ctx: StepContext, command: str, *, timeout: float | None = 60) -> str:
    code, output = await ctx.shell(command, timeout=timeout)
    if code != 0:
        raise StepError(f"`{command}` exited {code}: {output.strip()[:500]}", exit_code=code,
                        output=output[-OUTPUT_TAIL_CHARS:])
    return output


async def _stay(ctx: StepContext, seconds: float) -> None:
    """Wait, but notice a cancel within a fraction of a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if ctx.cancelled():
            raise asyncio.CancelledError
        ctx.advance(1 - left / seconds)  # time-based progress: the phone is not asked
        await asyncio.sleep(min(left, 0.2))
    ctx.advance(1.0)


async def open_url_step(ctx: StepContext, step: OpenUrlStep) -> dict[str, Any]:
    url = str(step.url)
    package = f" {shlex.quote(step.package)}" if step.package else ""
    await _run(ctx, f"am start -a android.intent.action.VIEW -d {shlex.quote(url)}{package}")
    await _stay(ctx, step.duration_sec)
    return {"url": url}


async def wait_step(ctx: StepContext, step: WaitStep) -> None:
    await _stay(ctx, step.duration_sec)


async def tap_step(ctx: StepContext, step: TapStep) -> None:
    await _run(ctx, f"input tap {step.x} {step.y}")


async def swipe_step(ctx: StepContext, step: SwipeStep) -> None:
    await _run(ctx, f"input swipe {step.x1} {step.y1} {step.x2} {step.y2} {step.duration_ms}")


async def keyevent_step(ctx: StepContext, step: KeyeventStep) -> None:
    await _run(ctx, f"input keyevent {shlex.quote(step.key)}")


async def text_step(ctx: StepContext, step: TextStep) -> None:
    # `input text` takes %s for spaces; everything else is shell-quoted.
    await _run(ctx, f"input text {shlex.quote(step.text.replace(' ', '%s'))}")


async def launch_app_step(ctx: StepContext, step: LaunchAppStep) -> None:
    if step.stop_first:
        await _run(ctx, f"am force-stop {shlex.quote(step.package)}")
    if step.activity:
        await _run(ctx, f"am start -n {shlex.quote(step.package + '/' + step.activity)}")
    else:
        await _run(ctx, f"monkey -p {shlex.quote(step.package)} -c android.intent.category.LAUNCHER 1")


async def stop_app_step(ctx: StepContext, step: StopAppStep) -> None:
    await _run(ctx, f"am force-stop {shlex.quote(step.package)}")


DOWNLOADED_AT, PUSHED_AT = 0.45, 0.75
"""How far an install is once its APK is on this PC, and once it is on the phone: each part moves by its bytes
between these marks (``pm install`` says nothing until it ends: its part moves only when it does)."""


def _bytes_progress(ctx: StepContext, verb: str, start: float, end: float) -> Progress:
    """A byte counter that moves the step from ``start`` to ``end`` and says "downloading 3.1 of 12.0 MB"."""

    def moved(done: int, total: int | None) -> None:
        if total:
            ctx.advance(start + (end - start) * min(done, total) / total,
                        f"{verb} {done / 1e6:.1f} of {total / 1e6:.1f} MB")
        else:
            ctx.advance(start, f"{verb} {done / 1e6:.1f} MB")

    return moved


async def install_apk_step(ctx: StepContext, step: InstallApkStep) -> dict[str, Any]:
    if ctx.fetch is None:
        raise StepError("this agent cannot download APKs", code="no_fetch", retryable=False)
    url = str(step.url)
    name = Path(urllib.parse.urlparse(url).path).name or "app.apk"
    local = ctx.artifacts_dir / f"download-{ctx.assignment_id}-{name}"
    ctx.advance(0.0, "downloading")
    await ctx.fetch(url, local, progress=_bytes_progress(ctx, "downloading", 0.0, DOWNLOADED_AT))
    ctx.advance(DOWNLOADED_AT, "pushing")
    if step.sha256:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        if digest != step.sha256:
            raise StepError(f"APK checksum mismatch: {digest}", code="apk_checksum", retryable=False)
    remote = f"/data/local/tmp/phonefleet-{ctx.assignment_id}.apk"
    await ctx.phone.push(local, remote, progress=_bytes_progress(ctx, "pushing", DOWNLOADED_AT, PUSHED_AT))
    ctx.advance(PUSHED_AT, "installing")
    flags = ("-r " if step.reinstall else "") + ("-g " if step.grant_permissions else "")
    code, output = await ctx.shell(f"pm install {flags}{remote}", timeout=300)
    await ctx.phone.shell(f"rm -f {remote}")
    if code != 0 or "Success" not in output:
        incompatible = any(s in output for s in ("INSTALL_FAILED_NO_MATCHING_ABIS", "INSTALL_FAILED_OLDER_SDK",
                                                 "INSTALL_PARSE_FAILED"))
        raise StepError(f"install failed: {output.strip()[:500]}",
                        code="apk_incompatible" if incompatible else "install_failed", retryable=not incompatible,
                        exit_code=code, output=output[-OUTPUT_TAIL_CHARS:])
    return {"installed": name}


class Instrumentation:
    """Follows ``am instrument -r``'s status blocks as they come: how many tests of how many have ended, and how
    many of them failed. A block is ``INSTRUMENTATION_STATUS: key=value`` lines (a value may run over several
    lines: a stack) closed by ``INSTRUMENTATION_STATUS_CODE: n``; n is 1 when a test starts, and 0 (passed),
    -1 (error), -2 (failed), -3 (ignored) or -4 (assumption failed) when it ends."""

    STATUS, CODE = "INSTRUMENTATION_STATUS: ", "INSTRUMENTATION_STATUS_CODE: "
    FAILED = frozenset({-1, -2})

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.total: int | None = None
        self.ended = 0
        self.failed = 0
        self._block: dict[str, str] = {}

    def line(self, text: str) -> None:
        if text.startswith(self.STATUS):
            key, _, value = text[len(self.STATUS):].partition("=")
            self._block[key] = value
        elif text.startswith(self.CODE):
            block, self._block = self._block, {}
            try:
                code = int(text[len(self.CODE):].strip())
                total = int(block["numtests"])
            except (KeyError, ValueError):
                return  # not a test's block (the instrumentation's own error)
            self.total = max(total, 1)
            if code != 1:
                self.ended += 1
                self.failed += code in self.FAILED
            running = "" if code != 1 else f", running {block.get('test') or block.get('current', '?')}"[:120]
            failed = f" · {self.failed} failed" if self.failed else ""
            self.ctx.advance(min(self.ended / self.total, 1.0),
                             f"{self.ended} of {self.total} tests done{failed}{running}")

    def counts(self) -> dict[str, int]:
        return {} if self.total is None else {"tests": self.total, "tests_run": self.ended,
                                               "tests_failed": self.failed}


async def run_tests_step(ctx: StepContext, step: RunTestsStep) -> dict[str, Any]:
    args = "".join(f" -e {shlex.quote(k)} {shlex.quote(v)}" for k, v in step.args.items())
    tests = Instrumentation(ctx)
    code, output = await ctx.shell(f"am instrument -w -r{args} {shlex.quote(step.runner)}", timeout=None,
                                   on_line=tests.line)
    failed = code != 0 or "FAILURES!!!" in output or "INSTRUMENTATION_FAILED" in output or tests.failed > 0
    if failed:
        counted = f"{tests.failed} of {tests.total} tests failed; " if tests.total else ""
        raise StepError(f"instrumentation failed: {counted}{output.strip()[-500:]}", code="tests_failed",
                        retryable=False, exit_code=code, output=output[-OUTPUT_TAIL_CHARS:])
    return {"instrumentation": output.strip()[-2000:], **tests.counts()}


async def screenshot_step(ctx: StepContext, step: ScreenshotStep) -> dict[str, Any]:
    del step
    png = await ctx.phone.shell_bytes("screencap -p", timeout=30)
    if not png.startswith(b"\x89PNG"):
        raise StepError("screencap did not return a PNG", code="screenshot_failed")
    return await ctx.save_artifact(f"{ctx.assignment_id}-{len(ctx.artifacts) + 1}.png", png, "screenshot")


async def shell_step(ctx: StepContext, step: ShellStep) -> dict[str, Any]:
    if not ctx.allow_shell:
        raise StepError("shell steps are not allowed for this job", code="shell_forbidden", retryable=False)
    code, output = await ctx.shell(step.command, timeout=step.timeout_sec)
    if code != 0:
        raise StepError(f"shell exited {code}: {output.strip()[:500]}", exit_code=code,
                        output=output[-OUTPUT_TAIL_CHARS:])
    return {"exit_code": code, "output": output[-4000:]}
