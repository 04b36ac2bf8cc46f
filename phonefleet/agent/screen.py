"""The live screen on the agent: a capture loop per watched phone, one-off snapshots, and remote input.

Each loop runs ``screencap -p`` over the phone's adb connection (``AdbHost``: a coroutine, no thread), hashes
the capture and, only when the picture changed, scales it down and encodes a JPEG in a small thread pool (never
on the event loop, never on asyncio's default pool, whose threads adbutils calls hold). A frame is sent and
acknowledged before the next one goes: a slow link means fewer frames, never a queue. Input wakes the loop at
once, so the picture that shows a tap follows it without waiting out the capture interval.
"""

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import io
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from PIL import Image

from phonefleet.agent.adbhost import AdbHost, AdbHostError
from phonefleet.protocol import events as ev
from phonefleet.protocol import screen as sc

log = logging.getLogger(__name__)

CAPTURE_LIMIT = 64 * 1024 * 1024
CAPTURE_TIMEOUT_SEC = 10.0
INPUT_TIMEOUT_SEC = 15.0
UNSENT_LIMIT = 3
"""Frames in a row the server did not take (no socket, or nobody watches there any more) end a stream."""

SendFrame = Callable[[sc.FrameMeta, bytes], Awaitable[bool]]
"""Send one frame to the server and wait for its ack; False: not sent (no socket)."""

_ENCODER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="screen-encode")
"""Decode, scale and encode off the loop; two threads bound the agent's cost whatever the number of streams."""


@dataclass(frozen=True)
class Encoded:
    data: bytes
    width: int
    height: int
    phone_width: int
    phone_height: int


def encode(capture: bytes, *, fmt: str, max_width: int | None, quality: int) -> Encoded:
    """A ``screencap -p`` PNG as a (scaled-down) JPEG, or as the PNG it is (``fmt="png"``, full size)."""
    with Image.open(io.BytesIO(capture)) as image:
        phone_width, phone_height = image.size
        if fmt == "png" and max_width is None:
            return Encoded(capture, phone_width, phone_height, phone_width, phone_height)
        picture = image.convert("RGB") if image.mode != "RGB" else image
        if max_width is not None and picture.width > max_width:
            height = max(1, round(picture.height * max_width / picture.width))
            factor = picture.width // max_width
            if factor >= 2:  # a box reduction by a whole factor (each pixel an average), then the rest by nearest:
                picture = picture.reduce(factor)  # a third of a full resample's cost, and as sharp at this size
                resample = Image.Resampling.NEAREST
            else:
                resample = Image.Resampling.BILINEAR
            if picture.width != max_width:
                picture = picture.resize((max_width, height), resample)
        out = io.BytesIO()
        if fmt == "png":
            picture.save(out, "PNG", optimize=False, compress_level=1)
        else:
            picture.save(out, "JPEG", quality=quality)
        return Encoded(out.getvalue(), picture.width, picture.height, phone_width, phone_height)


def input_commands(command: sc.InputCommand) -> list[str]:
    """The shell commands of one input (rotate reads the rotation first: see ``ScreenStreams.input``)."""
    match command:
        case sc.TapInput(x=x, y=y):
            return [f"input tap {x} {y}"]
        case sc.SwipeInput(x1=x1, y1=y1, x2=x2, y2=y2, duration_ms=ms):
            return [f"input swipe {x1} {y1} {x2} {y2} {ms}"]
        case sc.TextInput(text=text):
            # `input text` takes %s for spaces; everything else is shell-quoted.
            return [f"input text {shlex.quote(text.replace(' ', '%s'))}"]
        case sc.KeyeventInput(key=key):
            return [f"input keyevent {shlex.quote(key.upper() if not key.isdigit() else key)}"]
        case _:
            return []


@dataclass(eq=False)
class _Stream:
    serial: str
    params: sc.StreamStart
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    captures: int = 0
    frames: int = 0


class ScreenStreams:
    def __init__(self, adb: AdbHost, send: SendFrame) -> None:
        self.adb = adb
        self.send = send
        self.streams: dict[str, _Stream] = {}
        self._snapshots: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ streams

    def start(self, params: sc.StreamStart) -> None:
        """Stream this phone (again, with these parameters, if it already streams)."""
        self.stop(params.serial)
        stream = _Stream(params.serial, params)
        stream.task = asyncio.get_running_loop().create_task(self._loop(stream), name=f"screen-{params.serial}")
        self.streams[params.serial] = stream
        log.info("screen stream started", extra={"serial": params.serial})

    def stop(self, serial: str) -> None:
        stream = self.streams.pop(serial, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()
            log.info("screen stream stopped", extra={"serial": serial, "captures": stream.captures,
                                                      "frames": stream.frames})

    async def stop_all(self) -> None:
        tasks = [s.task for s in self.streams.values() if s.task is not None] + list(self._snapshots)
        self.streams.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def poke(self, serial: str) -> None:
        """Capture now (an input just changed the picture)."""
        stream = self.streams.get(serial)
        if stream is not None:
            stream.wake.set()

    async def _capture(self, serial: str) -> bytes:
        async with asyncio.timeout(CAPTURE_TIMEOUT_SEC):
            return await self.adb.service(serial, "exec:screencap -p", limit=CAPTURE_LIMIT)

    async def _loop(self, stream: _Stream) -> None:
        params, loop = stream.params, asyncio.get_running_loop()
        last: bytes | None = None
        seq = unsent = 0
        interval = params.interval_ms / 1000
        while True:
            began = time.monotonic()
            stream.wake.clear()
            try:
                capture = await self._capture(stream.serial)
                stream.captures += 1
                digest = hashlib.blake2b(capture, digest_size=16).digest()
                if digest != last:
                    taken = datetime.now(UTC)
                    frame = await loop.run_in_executor(_ENCODER, functools.partial(
                        encode, capture, fmt="jpeg", max_width=params.max_width, quality=params.quality))
                    seq += 1
                    if await self.send(_meta(stream.serial, seq, frame, taken), frame.data):
                        last, unsent = digest, 0
                        stream.frames += 1
                    else:  # not taken: the next capture is sent whatever it shows
                        unsent += 1
                        if unsent >= UNSENT_LIMIT:  # no server to hear it: it asks again after the next hello
                            log.info("screen stream ended: frames not taken", extra={"serial": stream.serial})
                            self.streams.pop(stream.serial, None)
                            return
            except (AdbHostError, TimeoutError, OSError, ValueError) as exc:  # ValueError: not an image
                log.info("screen capture failed", extra={"serial": stream.serial, "error": str(exc)[:200]})
                last = None
                interval_now = max(interval, 1.0)
            else:
                interval_now = interval
            rest = interval_now - (time.monotonic() - began)
            if rest > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stream.wake.wait(), rest)

    # ------------------------------------------------------------------ snapshots and input

    def snapshot(self, request: sc.SnapshotRequest) -> None:
        """One frame now, sent as a ``screen:frame`` answering the request (in the background)."""
        task = asyncio.get_running_loop().create_task(self._snapshot(request))
        self._snapshots.add(task)
        task.add_done_callback(self._snapshots.discard)

    async def _snapshot(self, request: sc.SnapshotRequest) -> None:
        try:
            capture = await self._capture(request.serial)
            taken = datetime.now(UTC)
            frame = await asyncio.get_running_loop().run_in_executor(_ENCODER, lambda: encode(
                capture, fmt=request.format, max_width=request.max_width, quality=request.quality))
        except (AdbHostError, TimeoutError, OSError, ValueError) as exc:
            log.info("screen snapshot failed", extra={"serial": request.serial, "error": str(exc)[:200]})
            return
        meta = _meta(request.serial, 0, frame, taken).model_copy(update={"format": request.format,
                                                                         "snapshot": request.request_id})
        await self.send(meta, frame.data)

    async def input(self, request: sc.AgentInput) -> ev.Ack:
        """Run one input on the phone; the ack says whether it took."""
        serial = request.serial
        try:
            async with asyncio.timeout(INPUT_TIMEOUT_SEC):
                if isinstance(request.input, sc.RotateInput):
                    now = (await self.adb.shell(serial, "settings get system user_rotation")).decode().strip()
                    turn = (int(now) + 1) % 4 if now.isdigit() else 1
                    commands = ["settings put system accelerometer_rotation 0",
                                f"settings put system user_rotation {turn}"]
                else:
                    commands = input_commands(request.input)
                for command in commands:
                    output = (await self.adb.shell(serial, command)).decode(errors="replace")
                    if "Error" in output or "Exception" in output:
                        return ev.Ack.refused("input_failed", output.strip()[:300])
        except (AdbHostError, TimeoutError, OSError) as exc:
            return ev.Ack.refused("phone_unreachable", str(exc)[:300] or "timed out")
        self.poke(serial)
        return ev.Ack(ok=True)


def _meta(serial: str, seq: int, frame: Encoded, taken: datetime) -> sc.FrameMeta:
    return sc.FrameMeta(serial=serial, seq=seq, width=frame.width, height=frame.height,
                        phone_width=frame.phone_width, phone_height=frame.phone_height, taken_at=taken)
