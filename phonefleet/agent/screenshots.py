"""Is a screenshot all one colour? (A dead panel, a hung compositor or a screen that stays off show one colour.)

Decoding a whole 1080x2400 PNG in Python takes seconds, so only its first row is unfiltered. While every row
so far is the first pixel repeated, the next row is too exactly when its filtered bytes are what its PNG filter
makes of an unchanged uniform row (zeros, or the pixel itself, or half of it for Average): a bytes comparison
at C speed. Rows are inflated one at a time, so a screen with anything on it answers within its first rows, and
a uniform one after one pass of comparisons. zlib alone does it: no imaging library for one yes-or-no.
"""

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Samples per pixel by PNG colour type: grey, RGB, palette index, grey+alpha, RGBA."""


class PngError(ValueError):
    """Not a PNG this reads (cut short, corrupt, interlaced, under 8 bits a sample)."""


@dataclass(frozen=True)
class ScreenVerdict:
    width: int
    height: int
    colour: bytes | None
    """The one colour (raw pixel bytes) every pixel has, or None: more than one colour."""

    def describe(self) -> str:
        if self.colour is None:
            return f"{self.width}x{self.height}, more than one colour"
        return f"{self.width}x{self.height}, all one colour (#{self.colour.hex()})"


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    bpp: int
    """Bytes per pixel (what PNG filters step back by)."""


def _chunks(png: bytes) -> tuple[_Header, bytes]:
    if not png.startswith(SIGNATURE):
        raise PngError("not a PNG (no PNG signature)")
    at, header, data = len(SIGNATURE), None, []
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        body = png[at + 8 : at + 8 + length]
        if len(body) < length:
            raise PngError("PNG cut short")
        at += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", body[:13])
            if colour_type not in CHANNELS or depth not in (8, 16) or interlace != 0:
                raise PngError(f"unsupported PNG (colour type {colour_type}, {depth} bits, interlace {interlace})")
            header = _Header(width, height, CHANNELS[colour_type] * depth // 8)
        elif kind == b"IDAT":
            data.append(body)
        elif kind == b"IEND":
            break
    if header is None or not data or header.width == 0 or header.height == 0:
        raise PngError("PNG without a header or image data")
    return header, b"".join(data)


def _rows(header: _Header, data: bytes) -> Iterator[tuple[int, bytes]]:
    """Each row's filter type and filtered bytes, inflated as they are read."""
    inflate = zlib.decompressobj()
    size = 1 + header.width * header.bpp
    pending, source = b"", data
    try:
        for _ in range(header.height):
            while len(pending) < size:
                chunk = inflate.decompress(source, size - len(pending))
                source = inflate.unconsumed_tail
                if not chunk and not source:
                    break
                pending += chunk
            if len(pending) < size:
                raise PngError("PNG image data cut short")
            yield pending[0], pending[1:size]
            pending = pending[size:]
    except zlib.error as exc:
        raise PngError(f"corrupt PNG image data: {exc}") from None


def _first_row(kind: int, data: bytes, bpp: int) -> bytes:
    """Row 0 unfiltered (the row above it is zeros: Up is None, Paeth is Sub)."""
    if kind in (0, 2):
        return data
    if kind not in (1, 3, 4):
        raise PngError(f"unknown PNG filter {kind}")
    row = bytearray(data)
    for i in range(bpp, len(row)):
        left = row[i - bpp]
        row[i] = (row[i] + (left // 2 if kind == 3 else left)) & 0xFF
    return bytes(row)


def verdict(png: bytes) -> ScreenVerdict:
    """Whether the PNG is all one colour; ``PngError`` if it cannot tell."""
    header, data = _chunks(png)
    rows = _rows(header, data)
    kind, filtered = next(rows)
    first = _first_row(kind, filtered, header.bpp)
    pixel = first[: header.bpp]
    uniform = pixel * header.width
    if first != uniform:
        return ScreenVerdict(header.width, header.height, None)
    zeros = bytes(len(uniform))
    half = bytes((c - c // 2) & 0xFF for c in pixel)
    same = {  # what each filter makes of the uniform row again, under a uniform row
        0: uniform, 1: pixel + zeros[header.bpp :], 2: zeros, 3: half + zeros[header.bpp :], 4: zeros}
    for kind, filtered in rows:
        if kind not in same:
            raise PngError(f"unknown PNG filter {kind}")
        if filtered != same[kind]:
            return ScreenVerdict(header.width, header.height, None)
    return ScreenVerdict(header.width, header.height, pixel)
