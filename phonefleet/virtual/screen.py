"""Screenshots of a virtual phone: real, valid PNGs, a status bar over a colour that tells
the foreground app."""

import asyncio
import concurrent.futures
import hashlib
import struct
import zlib
from dataclasses import dataclass

from phonefleet.virtual.faults import Fault
from phonefleet.virtual.state import PhoneState

_ENCODER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="virtual-screencap")
"""PNG encoding runs off the loop, but never on asyncio's default executor: in the agent's process that
pool's threads are the ones blocked in adbutils reads waiting for this very output, so sharing it starved
a fleet of concurrent screenshots until adb's read timeout."""


MARK = 48
"""The side of the square drawn where the last tap landed (pixels)."""


@dataclass(frozen=True)
class Picture:
    """Everything a screenshot shows; equal pictures share one encoded PNG."""

    width: int
    height: int
    bar: bytes
    app: bytes
    band: bytes
    """The colour of the band under the status bar: it changes with every input."""
    touch: tuple[int, int] | None
    clock: int
    """Animated phones: a status-bar clock that moves with every screencap (0 when still)."""


def _shade(seed: str) -> bytes:
    digest = hashlib.md5(seed.encode()).digest()
    return bytes(64 + b % 192 for b in digest[:3])


class ScreenRenderer:
    """Screenshots depend only on what they show (``Picture``), so encoded PNGs are cached and shared between
    phones; an animated phone's pictures are all new and are encoded fast rather than small."""

    def __init__(self) -> None:
        self._cache: dict[Picture, bytes] = {}

    @staticmethod
    def colors(state: PhoneState) -> tuple[bytes, bytes]:
        if not state.screen_on or state.fault is Fault.blank:
            return b"\x00\x00\x00", b"\x00\x00\x00"
        return b"\x20\x21\x24", _shade(state.foreground_package)

    @classmethod
    def picture(cls, state: PhoneState) -> Picture:
        width, height = state.screen_size
        bar, app = cls.colors(state)
        if app == b"\x00\x00\x00":  # dark: nothing else shows
            return Picture(width, height, bar, app, app, None, 0)
        band = _shade(f"input {state.inputs}") if state.inputs else app
        if state.animate:
            state.frames += 1
        return Picture(width, height, bar, app, band, state.last_touch, state.frames if state.animate else 0)

    async def png(self, state: PhoneState) -> bytes:
        picture = self.picture(state)
        cached = self._cache.get(picture)
        if cached is not None:
            return cached
        encoded = await asyncio.get_running_loop().run_in_executor(_ENCODER, self._encode_png, picture)
        if not picture.clock:  # an animated phone's picture never comes again
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[picture] = encoded
        return encoded

    @staticmethod
    def _encode_png(p: Picture) -> bytes:
        width, height = p.width, p.height
        bar_rows = min(height, max(1, height // 30))
        band_rows = min(height - bar_rows, max(1, height // 20))
        bar_row = b"\x00" + p.bar * width
        if p.clock:  # a moving block in the status bar
            at = (p.clock * 7) % max(1, width - bar_rows)
            bar_row = b"\x00" + p.bar * at + b"\xff\xff\xff" * min(bar_rows, width) + p.bar * (
                width - at - min(bar_rows, width))
        runs = [(bar_row, bar_rows), (b"\x00" + p.band * width, band_rows)]
        app_row = b"\x00" + p.app * width
        top = bar_rows + band_rows
        if p.touch is None:
            runs.append((app_row, height - top))
        else:
            x, y = p.touch
            left, right = min(width, max(0, x - MARK // 2)), min(width, x + MARK // 2)
            first, last = max(top, y - MARK // 2), min(height, y + MARK // 2)
            mark = bytes(255 - c for c in p.app)
            marked = b"\x00" + p.app * left + mark * max(0, right - left) + p.app * (width - max(left, right))
            runs += [(app_row, max(0, first - top)), (marked, max(0, last - first)),
                     (app_row, height - max(top, last, first))]

        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        body = chunk(b"IHDR", header) + chunk(b"IDAT", _deflate_runs(runs)) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body


# ------------------------------------------------------------------ deflate from cached pieces
#
# A screen is a few runs of identical rows. Each run is deflated in blocks of BLOCK_ROWS rows, each block by a fresh
# raw compressor ended with a full flush: such pieces reference nothing before them, so the same compressed block
# is reused wherever its rows repeat, and a new picture costs only its new rows (an animated status bar, a tap's
# mark) instead of deflating 7.8 MB. The zlib stream's Adler-32 is combined from the pieces' own.

BLOCK_ROWS = 64
_ADLER_BASE = 65521
_PIECES: dict[tuple[bytes, int], tuple[bytes, int, int]] = {}


def _adler32_combine(first: int, second: int, second_len: int) -> int:
    """zlib's adler32_combine: the checksum of A+B from those of A and B and the length of B."""
    rem = second_len % _ADLER_BASE
    sum1 = first & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 += (second & 0xFFFF) + _ADLER_BASE - 1
    sum2 += ((first >> 16) & 0xFFFF) + ((second >> 16) & 0xFFFF) + _ADLER_BASE - rem
    if sum1 >= _ADLER_BASE:
        sum1 -= _ADLER_BASE
    if sum1 >= _ADLER_BASE:
        sum1 -= _ADLER_BASE
    if sum2 >= _ADLER_BASE << 1:
        sum2 -= _ADLER_BASE << 1
    if sum2 >= _ADLER_BASE:
        sum2 -= _ADLER_BASE
    return sum1 | (sum2 << 16)


def _piece(row: bytes, count: int) -> tuple[bytes, int, int]:
    """``count`` copies of ``row``, deflated on their own: (compressed, adler32, raw length)."""
    key = (row, count)
    found = _PIECES.get(key)
    if found is None:
        raw = row * count
        deflater = zlib.compressobj(1, zlib.DEFLATED, -15)
        found = (deflater.compress(raw) + deflater.flush(zlib.Z_FULL_FLUSH), zlib.adler32(raw), len(raw))
        if len(_PIECES) > 512:
            _PIECES.clear()
        _PIECES[key] = found
    return found


def _deflate_runs(runs: list[tuple[bytes, int]]) -> bytes:
    """A zlib stream of the runs' rows, in order."""
    parts = [b"\x78\x01"]
    adler = 1
    for row, count in runs:
        whole, rest = divmod(count, BLOCK_ROWS)
        pieces = [_piece(row, BLOCK_ROWS)] * whole + ([_piece(row, rest)] if rest else [])
        for data, checksum, length in pieces:
            parts.append(data)
            adler = _adler32_combine(adler, checksum, length)
    parts.append(b"\x03\x00")  # the final block: empty, fixed codes
    parts.append(struct.pack(">I", adler))
    return b"".join(parts)
