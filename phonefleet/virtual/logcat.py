"""A virtual phone's log buffer and its ``logcat`` command.

The phone writes what it does (activities started, input, installs, crashes and ANRs of the packages a
test made crashing) into a ring buffer, stamped by the phone's own clock; ``logcat`` prints it as the real
one does with ``-v threadtime``: ``MM-DD hh:mm:ss.mmm  PID  TID L TAG     : message``. Supported: ``-d``
(dump and exit: the only mode here), ``-v threadtime`` (the only format), ``-T TIME`` (lines since a time:
``MM-DD hh:mm:ss.mmm``, ``YYYY-MM-DD hh:mm:ss.mmm`` or epoch ``sssss.mmm``; a bare number is a line count,
as on a phone), ``-t N`` (the last N lines), ``-c`` (clear).
"""

from datetime import UTC, datetime

from phonefleet.virtual.commandio import CommandError, CommandIO
from phonefleet.virtual.logbuffer import LogBuffer


def parse_since(text: str, now: float) -> float:
    """A ``-T`` time as epoch seconds; a year-less time is in the phone's current year."""
    text = text.strip()
    try:
        if "-" not in text:
            return float(text)
        if text.count("-") == 2:
            return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        year = datetime.fromtimestamp(now, UTC).year
        return datetime.strptime(f"{year}-{text}", "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise CommandError(f"logcat: invalid time: {text}") from None


async def logcat(buffer: LogBuffer, now: float, args: list[str], io: CommandIO) -> int:
    since: float | None = None
    last: int | None = None
    items = list(args)
    while items:
        arg = items.pop(0)
        if arg == "-c":
            buffer.clear()
            return 0
        if arg in ("-d", "-b", "main", "system", "crash", "all", "default"):
            continue
        if arg == "-v" and items:
            fmt = items.pop(0)
            if fmt != "threadtime":
                raise CommandError(f"logcat: only -v threadtime here, not {fmt}")
        elif arg in ("-T", "-t") and items:
            value = items.pop(0)
            if value.isdigit():
                last = int(value)
            else:
                since = parse_since(value, now)
        else:
            raise CommandError(f"logcat: unsupported option {arg}")
    entries = list(buffer.entries)
    if since is not None:
        entries = [e for e in entries if e.at >= since]
    if last is not None:
        entries = entries[-last:] if last else []
    await io.out("--------- beginning of main\n" + "".join(e.render() + "\n" for e in entries))
    return 0
