"""Screenshots of a virtual phone: real, valid PNGs, a status bar over a colour that tells
the foreground app."""

import asyncio
import concurrent.futures
import hashlib
import struct
import zlib

from phonefleet.virtual.faults import Fault
from phonefleet.virtual.state import PhoneState

_ENCODER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="virtual-screencap")
"""PNG encoding runs off the loop, but never on asyncio's default executor: in the agent's process that
pool's threads are the ones blocked in adbutils reads waiting for this very output, so sharing it starved
a fleet of concurrent screenshots until adb's read timeout."""


class ScreenRenderer:
    """Screenshots depend only on size and colours, so encoded PNGs are cached (and shared between phones)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, bytes, bytes], bytes] = {}

    @staticmethod
    def colors(state: PhoneState) -> tuple[bytes, bytes]:
        if not state.screen_on or state.fault is Fault.blank:
            return b"\x00\x00\x00", b"\x00\x00\x00"
        digest = hashlib.md5(state.foreground_package.encode()).digest()
        app = bytes(64 + b % 192 for b in digest[:3])
        return b"\x20\x21\x24", app

    async def png(self, state: PhoneState) -> bytes:
        width, height = state.display_size
        bar, app = self.colors(state)
        key = (width, height, bar, app)
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[key] = await asyncio.get_running_loop().run_in_executor(
                _ENCODER, self._encode_png, width, height, bar, app)
        return self._cache[key]

    @staticmethod
    def _encode_png(width: int, height: int, bar: bytes, app: bytes) -> bytes:
        bar_rows = min(height, max(1, height // 30))
        raw = (b"\x00" + bar * width) * bar_rows + (b"\x00" + app * width) * (height - bar_rows)

        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body
