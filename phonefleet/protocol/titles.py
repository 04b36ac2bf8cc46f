"""A job's title made from its plan, when the operator gives none: "Open example.com for 60 s".

The Python side's one copy of the dashboard's ``defaultTitle`` / ``describeStep`` (``dashboard/src/logic.ts``);
the two must say the same (``tests/test_titles.py`` holds the dashboard's own examples).
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel

MAX_TITLE = 200


def _seconds(value: Any) -> float:
    try:
        return float(value if value is not None else 0)
    except (TypeError, ValueError):
        return float("nan")


def _number(number: float) -> str:
    """As JavaScript prints a number: 60, 2.5, NaN."""
    if number != number:  # noqa: PLR0124 (NaN)
        return "NaN"
    return str(int(number)) if number.is_integer() else repr(number)


_HTTP_URL = re.compile(r"^https?://[^\s/?#]+", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_http_url(text: str) -> bool:
    """A full web address ("http://" or "https://" and a host), as the dashboard's ``isHttpUrl`` decides."""
    url = text.strip()
    if not _HTTP_URL.match(url) or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is no number)
    except ValueError:
        return False
    return bool(parts.hostname)


def _host(url: str) -> str | None:
    """The host to name in a title ("example.com:8443"); None when the text is no full web address."""
    if not is_http_url(url):
        return None
    parts = urlsplit(url.strip())
    port = parts.port
    shown = port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower())
    return f"{parts.hostname}:{port}" if shown else str(parts.hostname)


def _last_part(url: str) -> str | None:
    """The file an address names ("app.apk"), the address itself when it names none; None when it is none."""
    if not is_http_url(url):
        return None
    names = [p for p in urlsplit(url.strip()).path.split("/") if p]
    return names[-1] if names else url.strip()


def _fields(step: BaseModel | Mapping[str, Any]) -> Mapping[str, Any]:
    return step.model_dump(mode="json") if isinstance(step, BaseModel) else step


def describe_step(step: BaseModel | Mapping[str, Any]) -> str:
    """One step in words: "Open example.com for 60 s", "Install app.apk", "Take a screenshot"."""
    s = _fields(step)
    kind = s.get("type")
    if kind == "open_url":
        seconds = _seconds(s.get("duration_sec"))
        shown = f" for {_number(seconds)} s" if seconds > 0 else ""
        return f"Open {_host(str(s.get('url') or '')) or 'a web page'}{shown}"
    if kind == "launch_app":
        return f"Launch {s.get('package') or ''}"
    if kind == "stop_app":
        return f"Stop {s.get('package') or ''}"
    if kind == "install_apk":
        return f"Install {_last_part(str(s.get('url') or '')) or 'an APK'}"
    if kind == "screenshot":
        return "Take a screenshot"
    if kind == "wait":
        return f"Wait {_number(_seconds(s.get('duration_sec')))} s"
    return str(kind or "step")


def default_title(plan: Sequence[BaseModel | Mapping[str, Any]]) -> str:
    """The first step in words, then "+ N more steps"; "" for an empty plan."""
    if not plan:
        return ""
    first = describe_step(plan[0])
    more = len(plan) - 1
    return (f"{first} + {more} more {'step' if more == 1 else 'steps'}" if more > 0 else first)[:MAX_TITLE]
