"""The built-in self-test a quarantined phone passes to be let back (the server asks once its cool-down is over):
its boot completed, a shell command comes back, and its screen shows something (a screenshot not all one
colour: a dead panel or a hung compositor shows one). The screen is woken first, as a screen that went dark by
its own timeout is no fault of the phone.
"""

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

from phonefleet.agent import screenshots
from phonefleet.agent.adbhost import AdbHost, AdbHostError
from phonefleet.protocol.health import SelftestCheck, SelftestResult

SCREENSHOT_LIMIT = 64 * 1024 * 1024
Check = Callable[[AdbHost, str], Awaitable[tuple[bool, str]]]


async def _boot_completed(adb: AdbHost, serial: str) -> tuple[bool, str]:
    value = (await adb.shell(serial, "getprop sys.boot_completed")).decode("utf-8", "replace").strip()
    return value == "1", f"sys.boot_completed={value or '(empty)'}"


async def _shell(adb: AdbHost, serial: str) -> tuple[bool, str]:
    word = f"pf-selftest-{secrets.token_hex(4)}"
    started = time.monotonic()
    said = (await adb.shell(serial, f"echo {word}")).decode("utf-8", "replace").strip()
    took = (time.monotonic() - started) * 1000
    if said != word:
        return False, f"echo answered {said[:200]!r}"
    return True, f"echo answered in {took:.0f} ms"


async def _screenshot(adb: AdbHost, serial: str) -> tuple[bool, str]:
    await adb.shell(serial, "input keyevent KEYCODE_WAKEUP")
    png = await adb.service(serial, "exec:screencap -p", limit=SCREENSHOT_LIMIT)
    try:
        found = await asyncio.to_thread(screenshots.verdict, png)
    except screenshots.PngError as exc:
        return False, f"screencap -p gave no readable PNG: {exc}"
    return found.colour is None, found.describe()


CHECKS: tuple[tuple[str, Check], ...] = (
    ("boot_completed", _boot_completed), ("shell", _shell), ("screenshot", _screenshot))


async def _run(name: str, check: Check, adb: AdbHost, serial: str, timeout_sec: float) -> SelftestCheck:
    try:
        async with asyncio.timeout(timeout_sec):
            passed, detail = await check(adb, serial)
    except TimeoutError:
        passed, detail = False, f"no answer within {timeout_sec:g} s"
    except (AdbHostError, OSError) as exc:
        passed, detail = False, str(exc) or type(exc).__name__
    return SelftestCheck(name=name, passed=passed, detail=detail[:1000])


async def run_selftest(adb: AdbHost, serial: str, *, timeout_sec: float = 30.0) -> SelftestResult:
    """Every check, each bounded by ``timeout_sec``; the phone passes when all pass."""
    checks = [await _run(name, check, adb, serial, timeout_sec) for name, check in CHECKS]
    return SelftestResult(serial=serial, passed=all(c.passed for c in checks), checks=checks)
