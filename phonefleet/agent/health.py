"""A phone's health: the facts one probe reads (in one shell round trip), and the thresholds that judge them.

The probe is a single command line whose sections are framed by marker lines, so one adb round trip per
phone reads boot, battery, power, keyguard and /data facts together. What is broken is said in words an
operator acts on (``battery 52.0 °C above 45.0 °C``); a phone with anything broken gets no work until a
later probe finds it fit again.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phonefleet.protocol import events as ev
from phonefleet.protocol.health import HealthThresholds

MARK = ":pf:"
"""Starts every section line of the probe's output (no tool on a phone prints it)."""
SECTIONS: dict[str, str] = {
    "clock": "date +%s.%N",  # first: read as soon as the probe arrives (``ProbeFacts.phone_time``)
    "boot": "getprop sys.boot_completed",
    "model": "getprop ro.product.model",
    "release": "getprop ro.build.version.release",
    "battery": "dumpsys battery",
    "power": "dumpsys power | grep -E 'mWakefulness=|Display Power: state='",
    "keyguard": "dumpsys window policy | grep -E 'showing=|mIsShowing=|mDreamingLockscreen=|isStatusBarKeyguard='",
    "df": "df -k /data",
}
PROBE_COMMAND = "; ".join(f"echo {MARK}{name}; {command}" for name, command in SECTIONS.items()) + f"; echo {MARK}end"
KEYGUARD_KEYS = ("showing", "mIsShowing", "mDreamingLockscreen", "isStatusBarKeyguard")

UNAUTHORIZED = "adb unauthorized: accept the debugging prompt on the phone"
NOT_BOOTED = "not booted (sys.boot_completed != 1)"
PENDING = "health probe pending"
OFFLINE_STATES = ("offline", "gone")
"""``gone``: adb no longer lists the phone (this agent's word, not adb's)."""

BATTERY_STEP = 5
"""Battery points a phone must move (since the last report) to be reported again without other change."""
TEMPERATURE_STEP_C = 2.0


class ProbeOutputError(Exception):
    """The probe's output is cut short or not what the command prints."""


@dataclass(frozen=True)
class ProbeFacts:
    """What one probe read; None where the phone did not say."""

    boot_completed: bool | None = None
    model: str | None = None
    android_version: str | None = None
    battery: int | None = None
    battery_temp_c: float | None = None
    charging: bool | None = None
    screen_on: bool | None = None
    screen_locked: bool | None = None
    data_free_mb: int | None = None
    phone_time: float | None = None
    """The phone's clock (epoch seconds) during the probe: a run's logcat span starts by it (``clock_offset``)."""


def _sections(output: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in output.splitlines():
        line = raw.rstrip("\r")
        if line.startswith(MARK):
            current = sections.setdefault(line[len(MARK):].strip(), [])
        elif current is not None:
            current.append(line)
    if "end" not in sections:
        raise ProbeOutputError("probe output cut short")
    return sections


def _fields(lines: list[str], separator: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        for part in line.split() if separator == "=" else [line]:
            key, sep, value = part.strip().partition(separator)
            if sep:
                found.setdefault(key.strip(), value.strip())
    return found


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _battery(lines: list[str]) -> tuple[int | None, float | None, bool | None]:
    fields = {k.lower(): v for k, v in _fields(lines, ":").items()}
    level = _int(fields.get("level"))
    tenths = _int(fields.get("temperature"))
    powered = [fields.get(f"{kind} powered") for kind in ("ac", "usb", "wireless")]
    status = _int(fields.get("status"))  # BatteryManager: 2 charging, 5 full
    known = [p for p in powered if p in ("true", "false")]
    charging = None if not known and status is None else "true" in known or status == 2
    return level, None if tenths is None else tenths / 10, charging


def _screen_on(lines: list[str]) -> bool | None:
    text = "\n".join(lines)
    if "mWakefulness=" not in text and "Display Power: state=" not in text:
        return None
    return "mWakefulness=Awake" in text or "Display Power: state=ON" in text


def _locked(lines: list[str]) -> bool | None:
    fields = _fields(lines, "=")
    values = [fields[key] for key in KEYGUARD_KEYS if key in fields]
    return "true" in values if values else None


def _data_free_mb(lines: list[str]) -> int | None:
    """``df -k``: Filesystem 1K-blocks Used Available Use% Mounted-on; the row of /data (or the last one)."""
    rows = [line.split() for line in lines[1:] if len(line.split()) >= 6]
    row = next((r for r in rows if r[-1] == "/data"), rows[-1] if rows else None)
    available = _int(row[-3]) if row else None
    return None if available is None else available // 1024


def parse_probe(output: str) -> ProbeFacts:
    """The facts in ``PROBE_COMMAND``'s output; ``ProbeOutputError`` if it was cut short."""
    sections = _sections(output)

    def text(name: str) -> str | None:
        lines = sections.get(name)
        return "\n".join(lines).strip() if lines is not None else None

    boot = text("boot")
    level, temperature, charging = _battery(sections.get("battery", []))
    return ProbeFacts(
        boot_completed=None if boot is None else boot == "1", model=text("model") or None,
        android_version=text("release") or None, battery=level, battery_temp_c=temperature, charging=charging,
        screen_on=_screen_on(sections.get("power", [])), screen_locked=_locked(sections.get("keyguard", [])),
        data_free_mb=_data_free_mb(sections.get("df", [])), phone_time=_epoch(text("clock")))


def _epoch(text: str | None) -> float | None:
    """``date +%s.%N``: seconds, and the fraction where the phone's date knows ``%N``."""
    match = re.match(r"(\d{6,12})(?:\.(\d+))?", text or "")
    if match is None:
        return None
    return float(f"{match.group(1)}.{match.group(2) or '0'}")


def assess(adb_state: str, facts: ProbeFacts | None, failure: str | None, probe_sec: float | None,
           limits: HealthThresholds) -> list[str]:
    """What keeps a phone from work, one entry per broken threshold (empty: healthy). An offline phone is
    not judged: it is offline."""
    if adb_state in OFFLINE_STATES:
        return []
    if adb_state == "unauthorized":
        return [UNAUTHORIZED]
    if adb_state != "device":
        return [f"adb state {adb_state}"]
    if failure is not None:
        return [failure]
    if facts is None:
        return [PENDING]
    broken: list[str] = []
    if facts.boot_completed is False:
        broken.append(NOT_BOOTED)
    if facts.battery is not None and facts.battery < limits.min_battery:
        broken.append(f"battery {facts.battery}% below {limits.min_battery}%")
    if facts.battery_temp_c is not None and facts.battery_temp_c > limits.max_battery_temp_c:
        broken.append(f"battery {facts.battery_temp_c:.1f} °C above {limits.max_battery_temp_c:.1f} °C")
    if facts.data_free_mb is not None and facts.data_free_mb < limits.min_data_free_mb:
        broken.append(f"/data {facts.data_free_mb} MB free, below {limits.min_data_free_mb} MB")
    if probe_sec is not None and probe_sec > limits.max_probe_sec:
        broken.append(f"probe took {probe_sec:.1f} s, above {limits.max_probe_sec:.1f} s")
    return broken


def thresholds_in_force(server: HealthThresholds | None, overrides: Mapping[str, Any]) -> HealthThresholds:
    """The server's thresholds (the defaults until it has sent them), each overridden by this agent's own."""
    base = server or HealthThresholds()
    return HealthThresholds.model_validate({**base.model_dump(), **overrides})


def worth_reporting(before: ev.DeviceReport | None, now: ev.DeviceReport) -> bool:
    """Whether the server should hear of this phone again: its state or health changed, a threshold was
    crossed either way, or its battery or temperature moved noticeably. Probes that change nothing of the
    kind stay here, so 500 phones probed every 15 s do not flood the link."""
    if before is None:
        return True
    same = ("online", "healthy", "health_reason", "adb_state", "boot_completed", "charging", "broken", "model",
            "android_version", "tags")
    if any(getattr(before, name) != getattr(now, name) for name in same):
        return True
    return _moved(before.battery, now.battery, BATTERY_STEP) or _moved(
        before.battery_temp_c, now.battery_temp_c, TEMPERATURE_STEP_C)


def _moved(before: float | None, now: float | None, step: float) -> bool:
    if before is None or now is None:
        return before != now
    return abs(now - before) >= step
