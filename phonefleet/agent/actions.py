"""The step registry: what each plan step does to a phone over ADB.

Built-in steps are named here as ``module:function`` strings and imported on first use; third-party
steps come from the ``phonefleet.steps`` entry-point group (the name is the step ``type``). A step
is ``async def step(ctx: StepContext, step: dict) -> dict | None``; it raises ``StepError`` to fail
the assignment with a clear message (and says whether a retry elsewhere could help).
"""

import asyncio
import importlib
import shlex
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol

ENTRY_POINT_GROUP = "phonefleet.steps"


class Shell(Protocol):
    """What a step needs of a phone: adbutils' AdbDevice satisfies it (wrapped to run off-loop)."""

    async def shell(self, command: str, timeout: float | None = None) -> tuple[int, str]: ...

    async def shell_bytes(self, command: str, timeout: float | None = None) -> bytes: ...

    async def push(self, local: Path, remote: str) -> None: ...


class StepError(Exception):
    def __init__(self, message: str, *, code: str = "step_failed", retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass
class StepContext:
    serial: str
    phone: Shell
    assignment_id: int
    artifacts_dir: Path
    allow_shell: bool = False
    cancelled: Callable[[], bool] = lambda: False
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    fetch: Callable[[str, Path], Awaitable[None]] | None = None


StepFn = Callable[[StepContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]

BUILTIN: dict[str, str] = {
    name: f"phonefleet.agent.actions:{name}_step"
    for name in ("open_url", "wait", "tap", "swipe", "keyevent", "text", "launch_app", "stop_app",
                 "install_apk", "run_tests", "screenshot", "shell")
}


class Registry:
    def __init__(self) -> None:
        self._loaded: dict[str, StepFn] = {}
        self._external: dict[str, str] | None = None

    def _entry_points(self) -> dict[str, str]:
        if self._external is None:
            self._external = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        return self._external

    def known(self) -> list[str]:
        return sorted({*BUILTIN, *self._entry_points()})

    def get(self, step_type: str) -> StepFn:
        if step_type in self._loaded:
            return self._loaded[step_type]
        target = BUILTIN.get(step_type) or self._entry_points().get(step_type)
        if target is None:
            raise StepError(f"unknown step type {step_type!r}", code="unknown_step", retryable=False)
        module_name, _, attr = target.partition(":")
        fn: StepFn = getattr(importlib.import_module(module_name), attr)
        self._loaded[step_type] = fn
        return fn


async def _run(ctx: StepContext, command: str, *, timeout: float | None = 60) -> str:
    code, output = await ctx.phone.shell(command, timeout=timeout)
    if code != 0:
        raise StepError(f"`{command}` exited {code}: {output.strip()[:500]}")
    return output


async def _stay(ctx: StepContext, seconds: float) -> None:
    """Wait, but notice a cancel within a fraction of a second."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        if ctx.cancelled():
            raise asyncio.CancelledError
        await asyncio.sleep(min(left, 0.2))


async def open_url_step(ctx: StepContext, step: dict[str, Any]) -> dict[str, Any]:
    url = str(step["url"])
    package = f" {shlex.quote(step['package'])}" if step.get("package") else ""
    await _run(ctx, f"am start -a android.intent.action.VIEW -d {shlex.quote(url)}{package}")
    await _stay(ctx, float(step.get("duration_sec") or 0))
    return {"url": url}


async def wait_step(ctx: StepContext, step: dict[str, Any]) -> None:
    await _stay(ctx, float(step["duration_sec"]))


async def tap_step(ctx: StepContext, step: dict[str, Any]) -> None:
    await _run(ctx, f"input tap {int(step['x'])} {int(step['y'])}")


async def swipe_step(ctx: StepContext, step: dict[str, Any]) -> None:
    coords = " ".join(str(int(step[k])) for k in ("x1", "y1", "x2", "y2"))
    await _run(ctx, f"input swipe {coords} {int(step.get('duration_ms', 300))}")


async def keyevent_step(ctx: StepContext, step: dict[str, Any]) -> None:
    await _run(ctx, f"input keyevent {shlex.quote(str(step['key']))}")


async def text_step(ctx: StepContext, step: dict[str, Any]) -> None:
    # `input text` takes %s for spaces; everything else is shell-quoted.
    await _run(ctx, f"input text {shlex.quote(str(step['text']).replace(' ', '%s'))}")


async def launch_app_step(ctx: StepContext, step: dict[str, Any]) -> None:
    package = str(step["package"])
    if step.get("stop_first"):
        await _run(ctx, f"am force-stop {shlex.quote(package)}")
    if step.get("activity"):
        await _run(ctx, f"am start -n {shlex.quote(package + '/' + str(step['activity']))}")
    else:
        await _run(ctx, f"monkey -p {shlex.quote(package)} -c android.intent.category.LAUNCHER 1")


async def stop_app_step(ctx: StepContext, step: dict[str, Any]) -> None:
    await _run(ctx, f"am force-stop {shlex.quote(str(step['package']))}")


async def install_apk_step(ctx: StepContext, step: dict[str, Any]) -> dict[str, Any]:
    if ctx.fetch is None:
        raise StepError("this agent cannot download APKs", code="no_fetch", retryable=False)
    url = str(step["url"])
    name = Path(urllib.parse.urlparse(url).path).name or "app.apk"
    local = ctx.artifacts_dir / f"download-{ctx.assignment_id}-{name}"
    await ctx.fetch(url, local)
    if step.get("sha256"):
        import hashlib

        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        if digest != step["sha256"]:
            raise StepError(f"APK checksum mismatch: {digest}", code="apk_checksum", retryable=False)
    remote = f"/data/local/tmp/phonefleet-{ctx.assignment_id}.apk"
    await ctx.phone.push(local, remote)
    flags = ("-r " if step.get("reinstall", True) else "") + ("-g " if step.get("grant_permissions") else "")
    code, output = await ctx.phone.shell(f"pm install {flags}{remote}", timeout=300)
    await ctx.phone.shell(f"rm -f {remote}")
    if code != 0 or "Success" not in output:
        incompatible = any(s in output for s in ("INSTALL_FAILED_NO_MATCHING_ABIS", "INSTALL_FAILED_OLDER_SDK",
                                                 "INSTALL_PARSE_FAILED"))
        raise StepError(f"install failed: {output.strip()[:500]}",
                        code="apk_incompatible" if incompatible else "install_failed", retryable=not incompatible)
    return {"installed": name}


async def run_tests_step(ctx: StepContext, step: dict[str, Any]) -> dict[str, Any]:
    args = "".join(f" -e {shlex.quote(k)} {shlex.quote(v)}" for k, v in dict(step.get("args") or {}).items())
    code, output = await ctx.phone.shell(f"am instrument -w -r{args} {shlex.quote(str(step['runner']))}",
                                         timeout=None)
    failed = code != 0 or "FAILURES!!!" in output or "INSTRUMENTATION_FAILED" in output
    if failed:
        raise StepError(f"instrumentation failed: {output.strip()[-500:]}", code="tests_failed", retryable=False)
    return {"instrumentation": output.strip()[-2000:]}


async def screenshot_step(ctx: StepContext, step: dict[str, Any]) -> dict[str, Any]:
    del step
    png = await ctx.phone.shell_bytes("screencap -p", timeout=30)
    if not png.startswith(b"\x89PNG"):
        raise StepError("screencap did not return a PNG", code="screenshot_failed")
    ctx.artifacts_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.artifacts_dir / f"{ctx.assignment_id}-{len(ctx.artifacts) + 1}.png"
    path.write_bytes(png)
    artifact = {"kind": "screenshot", "file": path.name, "bytes": len(png)}
    ctx.artifacts.append(artifact)
    return artifact


async def shell_step(ctx: StepContext, step: dict[str, Any]) -> dict[str, Any]:
    if not ctx.allow_shell:
        raise StepError("shell steps are not allowed for this job", code="shell_forbidden", retryable=False)
    code, output = await ctx.phone.shell(str(step["command"]), timeout=float(step.get("timeout_sec", 60)))
    if code != 0:
        raise StepError(f"shell exited {code}: {output.strip()[:500]}")
    return {"exit_code": code, "output": output[-4000:]}
