"""The inside of a virtual phone: its state, an in-memory file system, and a small sh with Android tools.

Nothing here runs a real process: every command is Python acting on ``PhoneState``, and every command
is written to the phone's ``ActionLog`` so tests and demos can see what a client asked the phone to do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import posixpath
import re
import shlex
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

SDK_BY_RELEASE = {
    "7.0": 24, "7.1": 25, "8.0": 26, "8.1": 27, "9": 28, "10": 29, "11": 30,
    "12": 31, "12L": 32, "13": 33, "14": 34, "15": 35, "16": 36,
}  # fmt: skip

LAUNCHER = "com.google.android.apps.nexuslauncher/.NexusLauncherActivity"
BROWSER = "com.android.chrome/com.google.android.apps.chrome.Main"
SH = "/system/bin/sh"
WRITABLE_ROOTS = ("/data/local/tmp", "/sdcard")
STORAGE_ALIASES = ("/storage/emulated/0", "/storage/self/primary", "/mnt/sdcard")
BIN_DIRS = ("/system/bin", "/system/xbin", "/vendor/bin", "/product/bin", "/bin")

KEYCODES = {
    "HOME": 3, "BACK": 4, "CALL": 5, "ENDCALL": 6, "DPAD_UP": 19, "DPAD_DOWN": 20, "DPAD_LEFT": 21,
    "DPAD_RIGHT": 22, "DPAD_CENTER": 23, "VOLUME_UP": 24, "VOLUME_DOWN": 25, "POWER": 26, "CAMERA": 27,
    "TAB": 61, "SPACE": 62, "ENTER": 66, "DEL": 67, "MENU": 82, "SEARCH": 84, "MEDIA_PLAY_PAUSE": 85,
    "PAGE_UP": 92, "PAGE_DOWN": 93, "ESCAPE": 111, "FORWARD_DEL": 112, "MOVE_HOME": 122, "MOVE_END": 123,
    "VOLUME_MUTE": 164, "APP_SWITCH": 187, "SLEEP": 223, "WAKEUP": 224,
}  # fmt: skip
INPUT_SOURCES = {
    "keyboard", "mouse", "joystick", "touchnavigation", "touchpad", "trackball", "dpad", "stylus",
    "gamepad", "touchscreen", "rotaryencoder",
}  # fmt: skip


class ShellSyntaxError(Exception):
    """A command line the fake sh cannot parse; reported the way mksh does, with exit code 1."""


class ShellExit(Exception):
    """Raised by the ``exit`` builtin to end the current command line (and an interactive session)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class CommandError(Exception):
    """A command failed with a message for stderr; lets helpers bail out without threading status codes."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class ActionRecord:
    """One command a client made the phone run: what tests assert on."""

    timestamp: float
    service: str
    command: str
    argv: tuple[str, ...]


class ActionLog:
    """Every command a phone ran, readable at any time and awaitable for a condition.

    It keeps the newest ``limit`` records, so a phone in a long benchmark does not grow without bound;
    ``len(log)`` counts every record ever appended and is the mark to pass as ``since``.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.records: list[ActionRecord] = []
        self._limit = limit
        self._dropped = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return self._dropped + len(self.records)

    def append(self, service: str, argv: list[str] | tuple[str, ...]) -> ActionRecord:
        record = ActionRecord(time.time(), service, shlex.join(argv), tuple(argv))
        self.records.append(record)
        if len(self.records) > self._limit:
            drop = len(self.records) - self._limit // 2
            del self.records[:drop]
            self._dropped += drop
        self._changed.set()
        return record

    def commands(self) -> list[str]:
        return [r.command for r in self.records]

    def find(self, predicate: Callable[[ActionRecord], bool], since: int = 0) -> ActionRecord | None:
        start = max(0, since - self._dropped)
        return next((r for r in self.records[start:] if predicate(r)), None)

    async def wait_for(
        self, predicate: Callable[[ActionRecord], bool], timeout: float = 10.0, since: int = 0
    ) -> ActionRecord:
        """The first record (from mark ``since``, a past ``len(log)``) matching ``predicate``, waiting up to
        ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                found = self.find(predicate, since)
                if found is not None:
                    return found
                self._changed.clear()
                await self._changed.wait()


@dataclass
class VirtualFile:
    data: bytes
    mode: int
    mtime: int


@dataclass(frozen=True)
class FileStat:
    mode: int
    size: int
    mtime: int


class VirtualFileSystem:
    """An in-memory tree with Android's layout; only /data/local/tmp and /sdcard are writable (adb's shell user)."""

    def __init__(self) -> None:
        now = int(time.time())
        self._files: dict[str, VirtualFile] = {}
        self._dirs: dict[str, int] = {}
        for path in ("/", "/data", "/data/local", "/data/local/tmp", "/sdcard", "/sdcard/Download",
                     "/sdcard/Pictures", "/system", "/system/bin", "/vendor", "/proc", "/dev", "/storage"):  # fmt: skip
            self._dirs[path] = now

    @staticmethod
    def normalize(path: str, cwd: str = "/") -> str:
        full = posixpath.normpath(posixpath.join(cwd, path))
        if full.startswith("//"):
            full = full[1:]
        for alias in STORAGE_ALIASES:
            if full == alias or full.startswith(alias + "/"):
                return "/sdcard" + full[len(alias) :]
        return full

    def is_dir(self, path: str) -> bool:
        return self.normalize(path) in self._dirs

    def is_file(self, path: str) -> bool:
        return self.normalize(path) in self._files

    def stat(self, path: str) -> FileStat | None:
        path = self.normalize(path)
        if path in self._dirs:
            return FileStat(stat.S_IFDIR | 0o771, 4096, self._dirs[path])
        found = self._files.get(path)
        if found is None:
            return None
        return FileStat(stat.S_IFREG | (found.mode & 0o7777), len(found.data), found.mtime)

    def read(self, path: str) -> bytes:
        path = self.normalize(path)
        if path in self._dirs:
            raise IsADirectoryError(path)
        found = self._files.get(path)
        if found is None:
            raise FileNotFoundError(path)
        return found.data

    def writable(self, path: str) -> bool:
        path = self.normalize(path)
        return any(path.startswith(root + "/") for root in WRITABLE_ROOTS)

    def write(self, path: str, data: bytes, *, mode: int = 0o644, mtime: int | None = None, append: bool = False,
              make_parents: bool = False) -> None:  # fmt: skip
        path = self.normalize(path)
        if path in self._dirs:
            raise IsADirectoryError(path)
        if not self.writable(path):
            raise PermissionError(path)
        parent = posixpath.dirname(path)
        if parent not in self._dirs:
            if not make_parents:
                raise FileNotFoundError(parent)
            self.mkdir(parent, parents=True)
        old = self._files.get(path)
        if append and old is not None:
            data = old.data + data
            mode = old.mode
        self._files[path] = VirtualFile(data, mode & 0o7777, int(time.time()) if mtime is None else mtime)

    def mkdir(self, path: str, parents: bool = False) -> None:
        path = self.normalize(path)
        if path in self._dirs:
            if parents:
                return
            raise FileExistsError(path)
        if path in self._files:
            raise FileExistsError(path)
        if not self.writable(path):
            raise PermissionError(path)
        parent = posixpath.dirname(path)
        if parent not in self._dirs:
            if not parents:
                raise FileNotFoundError(parent)
            self.mkdir(parent, parents=True)
        self._dirs[path] = int(time.time())

    def remove(self, path: str, recursive: bool = False) -> None:
        path = self.normalize(path)
        if path in self._files:
            if not self.writable(path):
                raise PermissionError(path)
            del self._files[path]
            return
        if path not in self._dirs:
            raise FileNotFoundError(path)
        if not recursive:
            raise IsADirectoryError(path)
        if not self.writable(path):
            raise PermissionError(path)
        prefix = path + "/"
        for name in [p for p in self._files if p.startswith(prefix)]:
            del self._files[name]
        for name in [p for p in self._dirs if p.startswith(prefix) or p == path]:
            del self._dirs[name]

    def listdir(self, path: str) -> list[tuple[str, FileStat]]:
        path = self.normalize(path)
        if path not in self._dirs:
            raise FileNotFoundError(path) if path not in self._files else NotADirectoryError(path)
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix) :] for p in [*self._dirs, *self._files] if p.startswith(prefix) and p != path}
        entries = []
        for name in sorted(n for n in names if "/" not in n):
            found = self.stat(prefix + name)
            assert found is not None
            entries.append((name, found))
        return entries


@dataclass
class InstalledPackage:
    name: str
    path: str
    launcher_activity: str | None
    version_name: str = "1.0"
    version_code: int = 1
    system: bool = False
    installed_at: float = field(default_factory=time.time)


def _system_packages() -> dict[str, InstalledPackage]:
    specs = [
        ("android", None),
        ("com.android.shell", None),
        ("com.android.systemui", None),
        ("com.android.settings", ".Settings"),
        ("com.android.chrome", "com.google.android.apps.chrome.Main"),
        ("com.google.android.apps.nexuslauncher", ".NexusLauncherActivity"),
        ("com.google.android.youtube", "com.google.android.youtube.app.honeycomb.Shell$HomeActivity"),
        ("com.android.vending", "com.android.vending.AssetBrowserActivity"),
    ]
    packages = {}
    for name, activity in specs:
        path = f"/system/app/{name.rsplit('.', 1)[-1].capitalize()}/{name.rsplit('.', 1)[-1].capitalize()}.apk"
        packages[name] = InstalledPackage(name, path, activity, "14", 34, system=True, installed_at=1_230_768_000)
    return packages


@dataclass
class PhoneState:
    """Everything the phone knows about itself; the shell reads and changes it, tests set it directly."""

    serialno: str
    model: str
    manufacturer: str
    product: str
    device: str
    android_version: str
    sdk: int
    battery_level: int = 100
    ac_powered: bool = False
    usb_powered: bool = True
    screen_on: bool = True
    screen_size: tuple[int, int] = (1080, 2400)
    size_override: tuple[int, int] | None = None
    density: int = 420
    foreground: str = LAUNCHER
    current_url: str | None = None
    instrumentation_tests: int = 3
    instrumentation_failures: int = 0
    packages: dict[str, InstalledPackage] = field(default_factory=_system_packages)
    settings: dict[str, dict[str, str]] = field(
        default_factory=lambda: {
            "system": {"screen_brightness": "128", "screen_brightness_mode": "0", "screen_off_timeout": "60000"},
            "secure": {"android_id": "", "default_input_method": "com.android.inputmethod.latin/.LatinIME"},
            "global": {"airplane_mode_on": "0", "stay_on_while_plugged_in": "0", "adb_enabled": "1"},
        }
    )
    extra_props: dict[str, str] = field(default_factory=dict)
    files: VirtualFileSystem = field(default_factory=VirtualFileSystem)
    actions: ActionLog = field(default_factory=ActionLog)
    request_reboot: Callable[[], None] = lambda: None  # set by the phone: drop off the adb server and boot again

    def __post_init__(self) -> None:
        if not self.settings["secure"]["android_id"]:
            self.settings["secure"]["android_id"] = hashlib.sha1(self.serialno.encode()).hexdigest()[:16]

    @property
    def brand(self) -> str:
        return self.manufacturer.lower()

    def properties(self) -> dict[str, str]:
        build_id = f"VP{self.sdk}.{self.android_version}"
        fingerprint = f"{self.brand}/{self.product}/{self.device}:{self.android_version}/{build_id}/1:user/release-keys"
        props = {
            "ro.serialno": self.serialno,
            "ro.boot.serialno": self.serialno,
            "ro.product.model": self.model,
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.brand": self.brand,
            "ro.product.name": self.product,
            "ro.product.device": self.device,
            "ro.product.board": self.device,
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
            "ro.product.locale": "en-US",
            "ro.build.version.release": self.android_version,
            "ro.build.version.sdk": str(self.sdk),
            "ro.build.version.security_patch": "2024-06-05",
            "ro.build.id": build_id,
            "ro.build.display.id": build_id,
            "ro.build.type": "user",
            "ro.build.tags": "release-keys",
            "ro.build.fingerprint": fingerprint,
            "ro.build.characteristics": "nosdcard",
            "ro.hardware": self.device,
            "ro.secure": "1",
            "ro.debuggable": "0",
            "ro.sf.lcd_density": str(self.density),
            "sys.boot_completed": "1",
            "dev.bootcomplete": "1",
            "init.svc.adbd": "running",
            "persist.sys.timezone": "UTC",
            "service.adb.tcp.port": "5555",
            "gsm.sim.state": "ABSENT",
        }
        props.update(self.extra_props)
        return props

    @property
    def display_size(self) -> tuple[int, int]:
        return self.size_override or self.screen_size

    @property
    def foreground_package(self) -> str:
        return self.foreground.split("/", 1)[0]

    def go_home(self) -> None:
        self.foreground = LAUNCHER


_ENCODER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="virtual-screencap")
"""PNG encoding runs off the loop, but never on asyncio's default executor: in the agent's process that
pool's threads are the ones blocked in adbutils reads waiting for this very output, so sharing it starved
a fleet of concurrent screenshots until adb's read timeout."""


class ScreenRenderer:
    """Builds real, valid PNG (and raw RGBA) screenshots: a status bar over a colour that tells the foreground app."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, bytes, bytes], bytes] = {}

    @staticmethod
    def colors(state: PhoneState) -> tuple[bytes, bytes]:
        if not state.screen_on:
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

    def raw(self, state: PhoneState) -> bytes:
        """``screencap`` without -p: width, height, format (1 = RGBA_8888), colour space, then the pixels."""
        width, height = state.display_size
        bar, app = self.colors(state)
        bar_rows = min(height, max(1, height // 30))
        pixels = (bar + b"\xff") * width * bar_rows + (app + b"\xff") * width * (height - bar_rows)
        return struct.pack("<IIII", width, height, 1, 0) + pixels

    @staticmethod
    def _encode_png(width: int, height: int, bar: bytes, app: bytes) -> bytes:
        bar_rows = min(height, max(1, height // 30))
        raw = (b"\x00" + bar * width) * bar_rows + (b"\x00" + app * width) * (height - bar_rows)

        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
        return b"\x89PNG\r\n\x1a\n" + body


# --------------------------------------------------------------------------------------------- parser


@dataclass(frozen=True)
class WordPart:
    text: str
    variable: bool = False


@dataclass(frozen=True)
class Word:
    parts: tuple[WordPart, ...]


@dataclass(frozen=True)
class Operator:
    op: str


@dataclass(frozen=True)
class RedirectOp:
    fd: int
    op: str


@dataclass(frozen=True)
class Redirect:
    fd: int
    op: str
    target: Word


@dataclass
class SimpleCommand:
    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)


@dataclass(frozen=True)
class ListItem:
    """A pipeline and how it joins the one before it (``;``, ``&&`` or ``||``)."""

    connector: str
    pipeline: tuple[SimpleCommand, ...]


Token = Word | Operator | RedirectOp


class _Lexer:
    """Splits one command line into words (kept as parts so ``$?`` expands when its command runs) and operators."""

    def __init__(self, line: str) -> None:
        self.line = line
        self.pos = 0
        self.tokens: list[Token] = []
        self.parts: list[WordPart] = []
        self.buf: list[str] = []
        self.in_word = False
        self.quoted = False

    def _flush(self) -> None:
        if self.buf:
            self.parts.append(WordPart("".join(self.buf)))
            self.buf.clear()

    def _end_word(self) -> None:
        self._flush()
        if self.in_word:
            self.tokens.append(Word(tuple(self.parts)))
        self.parts = []
        self.in_word = False
        self.quoted = False

    def _peek(self, offset: int = 1) -> str:
        index = self.pos + offset
        return self.line[index] if index < len(self.line) else ""

    def _variable(self) -> None:
        nxt = self._peek()
        if nxt and (nxt in "?$#!" or nxt.isdigit()):
            name, self.pos = nxt, self.pos + 2
        elif nxt == "{":
            end = self.line.find("}", self.pos + 2)
            if end < 0:
                raise ShellSyntaxError("${: bad substitution")
            name, self.pos = self.line[self.pos + 2 : end], end + 1
        elif nxt.isalpha() or nxt == "_":
            end = self.pos + 1
            while end < len(self.line) and (self.line[end].isalnum() or self.line[end] == "_"):
                end += 1
            name, self.pos = self.line[self.pos + 1 : end], end
        else:
            self.buf.append("$")
            self.pos += 1
            self.in_word = True
            return
        self._flush()
        self.parts.append(WordPart(name, variable=True))
        self.in_word = True

    def _double_quoted(self) -> None:
        self.pos += 1
        self.in_word = self.quoted = True
        while True:
            if self.pos >= len(self.line):
                raise ShellSyntaxError("unterminated quoted string")
            c = self.line[self.pos]
            if c == '"':
                self.pos += 1
                return
            if c == "\\" and self._peek() in ('"', "\\", "$", "`"):
                self.buf.append(self._peek())
                self.pos += 2
            elif c == "$":
                self._variable()
            else:
                self.buf.append(c)
                self.pos += 1

    def _redirect(self, c: str) -> None:
        digits = "".join(self.buf)
        if self.in_word and not self.quoted and not self.parts and digits.isdigit():
            fd = int(digits)
            self.buf.clear()
            self.in_word = False
        else:
            self._end_word()
            fd = 1 if c == ">" else 0
        self.pos += 1
        op = c
        if c == ">" and self._peek(0) == ">":
            op, self.pos = ">>", self.pos + 1
        elif c == ">" and self._peek(0) == "&":
            op, self.pos = ">&", self.pos + 1
        elif c == "<" and self._peek(0) in ("<", "&"):
            raise ShellSyntaxError("here documents are not supported")
        self.tokens.append(RedirectOp(fd, op))

    def tokenize(self) -> list[Token]:
        line = self.line
        while self.pos < len(line):
            c = line[self.pos]
            if c in " \t":
                self._end_word()
                self.pos += 1
            elif c in ";\n":
                self._end_word()
                self.tokens.append(Operator(";"))
                self.pos += 1
            elif c in "&|":
                self._end_word()
                if self._peek() == c:
                    self.tokens.append(Operator(c * 2))
                    self.pos += 2
                elif c == "&" and self._peek() == ">":
                    raise ShellSyntaxError("'&>' is not supported")
                else:
                    self.tokens.append(Operator(c))
                    self.pos += 1
            elif c in "<>":
                self._redirect(c)
            elif c == "#" and not self.in_word:
                break
            elif c == "'":
                end = line.find("'", self.pos + 1)
                if end < 0:
                    raise ShellSyntaxError("unterminated quoted string")
                self.buf.append(line[self.pos + 1 : end])
                self.in_word = self.quoted = True
                self.pos = end + 1
            elif c == '"':
                self._double_quoted()
            elif c == "\\":
                nxt = self._peek()
                if nxt != "\n":
                    self.buf.append(nxt)
                    self.in_word = self.quoted = True
                self.pos += 2
            elif c == "$":
                self._variable()
            elif c in "`(" or (c == ")" and not self.in_word):
                raise ShellSyntaxError(f"'{c}' unexpected (subshells and command substitution are not supported)")
            else:
                self.buf.append(c)
                self.in_word = True
                self.pos += 1
        self._end_word()
        return self.tokens


class ShellParser:
    """Parses the sh subset adb clients send: quotes, variables, ``;`` ``&&`` ``||`` ``|`` and ``> >> < 2>&1``."""

    def parse(self, line: str) -> list[ListItem]:
        items: list[ListItem] = []
        connector = ";"
        pipeline: list[SimpleCommand] = []
        command = SimpleCommand()
        pending: RedirectOp | None = None
        for token in _Lexer(line).tokenize():
            if isinstance(token, Word):
                if pending is not None:
                    command.redirects.append(Redirect(pending.fd, pending.op, token))
                    pending = None
                else:
                    command.words.append(token)
                continue
            if pending is not None:
                raise ShellSyntaxError(f"'{getattr(token, 'op', '')}' unexpected")
            if isinstance(token, RedirectOp):
                pending = token
                continue
            empty = not command.words and not command.redirects
            if token.op == "|":
                if empty:
                    raise ShellSyntaxError("'|' unexpected")
                pipeline.append(command)
                command = SimpleCommand()
                continue
            if empty:
                if pipeline or token.op in ("&&", "||") or connector in ("&&", "||"):
                    raise ShellSyntaxError(f"'{token.op}' unexpected")
                continue
            pipeline.append(command)
            items.append(ListItem(connector, tuple(pipeline)))
            connector = ";" if token.op in (";", "&") else token.op
            pipeline, command = [], SimpleCommand()
        if pending is not None:
            raise ShellSyntaxError("newline unexpected")
        if command.words or command.redirects:
            pipeline.append(command)
        elif pipeline or connector in ("&&", "||"):
            raise ShellSyntaxError("newline unexpected")
        if pipeline:
            items.append(ListItem(connector, tuple(pipeline)))
        return items


# --------------------------------------------------------------------------------------------- I/O


class OutputSink(Protocol):
    async def write(self, data: bytes) -> None: ...


class StdinSource(Protocol):
    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all of them until end of input when -1); fewer only at end of input."""
        ...


class BufferSink:
    """Collects output: between the commands of a pipeline, and for ``> file``."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        self.data += data


class NullSink:
    """``/dev/null``."""

    async def write(self, data: bytes) -> None:
        return None


class BytesStdin:
    """Input that is already known: the output of the previous command of a pipeline, or ``< file``."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = data
        self._pos = 0

    async def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk


@dataclass
class CommandIO:
    """What one command sees: its three streams and the working directory of the session."""

    stdin: StdinSource
    stdout: OutputSink
    stderr: OutputSink
    cwd: str = "/"

    async def out(self, text: str | bytes) -> None:
        await self.stdout.write(text.encode() if isinstance(text, str) else text)

    async def err(self, text: str | bytes) -> None:
        await self.stderr.write(text.encode() if isinstance(text, str) else text)

    def path(self, name: str) -> str:
        return VirtualFileSystem.normalize(name, self.cwd)


Handler = Callable[[list[str], CommandIO], Awaitable[int]]


def _lines(data: bytes) -> list[str]:
    return data.decode(errors="replace").splitlines()


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"{what}: invalid number '{text}'") from None


# --------------------------------------------------------------------------------------------- commands


class CoreUtils:
    """The toybox commands scripts lean on: echo, true/false, sleep, cat, ls, rm, mkdir, grep, head, ..."""

    def __init__(self, state: PhoneState) -> None:
        self.state = state
        self.fs = state.files

    def table(self) -> dict[str, Handler]:
        return {
            "echo": self.echo, "true": self.true, "false": self.false, "sleep": self.sleep, "cat": self.cat,
            "ls": self.ls, "rm": self.rm, "mkdir": self.mkdir, "touch": self.touch, "grep": self.grep,
            "head": self.head, "tail": self.tail, "wc": self.wc, "md5sum": self.md5sum, "id": self.id,
            "whoami": self.whoami, "date": self.date, "chmod": self.noop, "log": self.noop, "sync": self.noop,
            "logcat": self.logcat, "uptime": self.uptime,
        }  # fmt: skip

    async def noop(self, args: list[str], io: CommandIO) -> int:
        return 0

    async def true(self, args: list[str], io: CommandIO) -> int:
        return 0

    async def false(self, args: list[str], io: CommandIO) -> int:
        return 1

    async def echo(self, args: list[str], io: CommandIO) -> int:
        newline, escapes = True, False
        while args and args[0] in ("-n", "-e", "-ne", "-en", "-E"):
            flag = args.pop(0)
            newline = newline and "n" not in flag
            escapes = escapes or "e" in flag
        text = " ".join(args)
        if escapes:
            text = text.replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")
        await io.out(text + ("\n" if newline else ""))
        return 0

    async def sleep(self, args: list[str], io: CommandIO) -> int:
        if not args:
            raise CommandError("sleep: Needs 1 argument")
        try:
            seconds = sum(float(a.rstrip("s")) for a in args)
        except ValueError:
            raise CommandError(f"sleep: invalid number '{args[0]}'") from None
        await asyncio.sleep(seconds)
        return 0

    async def _read_input(self, name: str, io: CommandIO) -> bytes:
        try:
            return self.fs.read(io.path(name))
        except IsADirectoryError:
            raise CommandError(f"{name}: Is a directory") from None
        except FileNotFoundError:
            raise CommandError(f"{name}: No such file or directory") from None

    async def cat(self, args: list[str], io: CommandIO) -> int:
        names = [a for a in args if not a.startswith("-") or a == "-"]
        if not names:
            await io.out(await io.stdin.read())
            return 0
        status = 0
        for name in names:
            try:
                await io.out(await io.stdin.read() if name == "-" else await self._read_input(name, io))
            except CommandError as exc:
                await io.err(f"cat: {exc.message}\n")
                status = 1
        return status

    async def ls(self, args: list[str], io: CommandIO) -> int:
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        names = [a for a in args if not a.startswith("-")] or ["."]
        status = 0
        for name in names:
            path = io.path(name)
            found = self.fs.stat(path)
            if found is None:
                await io.err(f"ls: {name}: No such file or directory\n")
                status = 1
                continue
            entries = self.fs.listdir(path) if stat.S_ISDIR(found.mode) and "d" not in flags else [(name, found)]
            for entry, info in entries:
                if "l" in flags:
                    kind = "d" if stat.S_ISDIR(info.mode) else "-"
                    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(info.mtime))
                    perms = stat.filemode(info.mode)[1:]
                    await io.out(f"{kind}{perms} 1 shell shell {info.size:>8} {when} {entry}\n")
                else:
                    await io.out(entry + "\n")
        return status

    async def rm(self, args: list[str], io: CommandIO) -> int:
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        status = 0
        for name in (a for a in args if not a.startswith("-")):
            try:
                self.fs.remove(io.path(name), recursive="r" in flags or "R" in flags)
            except FileNotFoundError:
                if "f" not in flags:
                    await io.err(f"rm: {name}: No such file or directory\n")
                    status = 1
            except IsADirectoryError:
                await io.err(f"rm: {name}: Is a directory\n")
                status = 1
            except PermissionError:
                await io.err(f"rm: {name}: Permission denied\n")
                status = 1
        return status

    async def mkdir(self, args: list[str], io: CommandIO) -> int:
        parents = "-p" in args
        status = 0
        for name in (a for a in args if not a.startswith("-")):
            try:
                self.fs.mkdir(io.path(name), parents=parents)
            except FileExistsError:
                await io.err(f"mkdir: '{name}': File exists\n")
                status = 1
            except (PermissionError, FileNotFoundError) as exc:
                reason = "Permission denied" if isinstance(exc, PermissionError) else "No such file or directory"
                await io.err(f"mkdir: '{name}': {reason}\n")
                status = 1
        return status

    async def touch(self, args: list[str], io: CommandIO) -> int:
        for name in (a for a in args if not a.startswith("-")):
            path = io.path(name)
            try:
                self.fs.write(path, b"", append=True)
            except (PermissionError, FileNotFoundError, IsADirectoryError):
                await io.err(f"touch: '{name}': Permission denied\n")
                return 1
        return 0

    async def grep(self, args: list[str], io: CommandIO) -> int:
        options: set[str] = set()
        rest: list[str] = []
        for arg in args:
            if arg.startswith("-") and len(arg) > 1 and not rest:
                options.update(arg[1:])
            else:
                rest.append(arg)
        if not rest:
            raise CommandError("grep: no pattern", 2)
        pattern, names = rest[0], rest[1:]
        flags = re.IGNORECASE if "i" in options else 0
        regex = re.compile(re.escape(pattern) if "F" in options else pattern, flags)
        data = b"".join([await self._read_input(n, io) for n in names]) if names else await io.stdin.read()
        matched = [line for line in _lines(data) if bool(regex.search(line)) != ("v" in options)]
        if "c" in options:
            await io.out(f"{len(matched)}\n")
        elif "q" not in options:
            await io.out("".join(line + "\n" for line in matched))
        return 0 if matched else 1

    @staticmethod
    def _count(args: list[str]) -> tuple[int, list[str]]:
        count, names, items = 10, [], list(args)
        while items:
            arg = items.pop(0)
            if arg == "-n" and items:
                count = _parse_int(items.pop(0), "head")
            elif re.fullmatch(r"-\d+", arg):
                count = int(arg[1:])
            else:
                names.append(arg)
        return count, names

    async def head(self, args: list[str], io: CommandIO) -> int:
        if "-c" in args[:-1]:
            index = args.index("-c")
            size = _parse_int(args[index + 1], "head")
            names = args[:index] + args[index + 2 :]
            data = await self._read_input(names[0], io) if names else await io.stdin.read()
            await io.out(data[:size])
            return 0
        count, names = self._count(args)
        data = await self._read_input(names[0], io) if names else await io.stdin.read()
        await io.out("".join(line + "\n" for line in _lines(data)[:count]))
        return 0

    async def tail(self, args: list[str], io: CommandIO) -> int:
        count, names = self._count(args)
        data = await self._read_input(names[0], io) if names else await io.stdin.read()
        await io.out("".join(line + "\n" for line in _lines(data)[-count:] if count))
        return 0

    async def wc(self, args: list[str], io: CommandIO) -> int:
        names = [a for a in args if not a.startswith("-")]
        data = await self._read_input(names[0], io) if names else await io.stdin.read()
        counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
        wanted = "".join(a[1:] for a in args if a.startswith("-")) or "lwc"
        await io.out(" ".join(str(counts[k]) for k in "lwc" if k in wanted) + (f" {names[0]}" if names else "") + "\n")
        return 0

    async def md5sum(self, args: list[str], io: CommandIO) -> int:
        status = 0
        for name in args:
            try:
                await io.out(f"{hashlib.md5(await self._read_input(name, io)).hexdigest()}  {name}\n")
            except CommandError as exc:
                await io.err(f"md5sum: {exc.message}\n")
                status = 1
        return status

    async def id(self, args: list[str], io: CommandIO) -> int:
        await io.out("uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),1011(adb),"
                     "1015(sdcard_rw),1028(sdcard_r),3003(inet) context=u:r:shell:s0\n")  # fmt: skip
        return 0

    async def whoami(self, args: list[str], io: CommandIO) -> int:
        await io.out("shell\n")
        return 0

    async def date(self, args: list[str], io: CommandIO) -> int:
        now = time.time()
        if args and args[0].startswith("+"):
            await io.out(time.strftime(args[0][1:].replace("%N", "000000000"), time.gmtime(now)) + "\n")
        else:
            await io.out(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(now)) + "\n")
        return 0

    async def uptime(self, args: list[str], io: CommandIO) -> int:
        load = "up 3 days,  4:05,  0 users,  load average: 0.42, 0.38, 0.35"
        await io.out(time.strftime(" %H:%M:%S ", time.gmtime()) + load + "\n")
        return 0

    async def logcat(self, args: list[str], io: CommandIO) -> int:
        if any(a in ("-c", "--clear", "-d", "-g", "-b") or a.startswith("-t") for a in args):
            return 0
        stamp = time.strftime("%m-%d %H:%M:%S.000", time.gmtime())
        await io.out(f"--------- beginning of main\n{stamp}  1000  1000 I VirtualPhone: logcat is quiet here\n")
        await asyncio.Event().wait()  # like the real one: streams until the client hangs up
        return 0


class AndroidTools:
    """Android's tools (getprop, am, pm, monkey, input, dumpsys, screencap, wm, settings, ...) over ``PhoneState``."""

    def __init__(self, state: PhoneState, renderer: ScreenRenderer) -> None:
        self.state = state
        self.fs = state.files
        self.renderer = renderer

    def table(self) -> dict[str, Handler]:
        return {
            "getprop": self.getprop, "setprop": self.setprop, "am": self.am, "pm": self.pm, "cmd": self.cmd,
            "monkey": self.monkey, "input": self.input, "dumpsys": self.dumpsys, "screencap": self.screencap,
            "wm": self.wm, "settings": self.settings_cmd, "svc": self.svc, "uiautomator": self.uiautomator,
            "reboot": self.reboot,
        }  # fmt: skip

    # -- properties

    async def getprop(self, args: list[str], io: CommandIO) -> int:
        props = self.state.properties()
        if not args:
            await io.out("".join(f"[{key}]: [{props[key]}]\n" for key in sorted(props)))
        else:
            await io.out(props.get(args[0], args[1] if len(args) > 1 else "") + "\n")
        return 0

    async def setprop(self, args: list[str], io: CommandIO) -> int:
        if len(args) != 2:
            raise CommandError("setprop: Need 2 arguments")
        if args[0].startswith("ro.") and args[0] in self.state.properties():
            raise CommandError(f"Failed to set property '{args[0]}' to '{args[1]}'.")
        self.state.extra_props[args[0]] = args[1]
        return 0

    # -- activity manager

    async def am(self, args: list[str], io: CommandIO) -> int:
        sub = args[0] if args else ""
        rest = args[1:]
        if sub in ("start", "start-activity"):
            return await self._am_start(rest, io)
        if sub == "force-stop" and rest:
            if self.state.foreground_package == rest[-1]:
                self.state.go_home()
            return 0
        if sub in ("kill", "kill-all", "clear-debug-app", "set-debug-app"):
            return 0
        if sub == "broadcast":
            action = rest[rest.index("-a") + 1] if "-a" in rest[:-1] else None
            await io.out(f"Broadcasting: Intent {{ {'act=' + action + ' ' if action else ''}flg=0x400000 }}\n"
                         "Broadcast completed: result=0\n")  # fmt: skip
            return 0
        if sub in ("startservice", "start-service", "start-foreground-service"):
            await io.out(f"Starting service: Intent {{ {' '.join(rest)} }}\n")
            return 0
        if sub == "instrument":
            return await self._am_instrument(rest, io)
        if sub == "get-current-user":
            await io.out("0\n")
            return 0
        await io.err(f"Unknown command: {sub}\n" if sub else "Activity manager (activity) commands: ...\n")
        return 255

    def _resolve(self, component: str) -> str:
        package, _, activity = component.partition("/")
        if activity.startswith("."):
            activity = package + activity
        return f"{package}/{activity}"

    async def _am_start(self, args: list[str], io: CommandIO) -> int:
        action = data = component = None
        categories: list[str] = []
        wait = False
        with_value = {"-t", "-f", "--user", "--display", "--windowingMode", "--activityType", "-P",
                      "--start-profiler", "-R", "--esn"}  # fmt: skip
        two_values = {"-e", "--es", "--ez", "--ei", "--el", "--ef", "--eu", "--ecn", "--eia", "--esa"}
        items = list(args)
        while items:
            arg = items.pop(0)
            if arg == "-a" and items:
                action = items.pop(0)
            elif arg == "-d" and items:
                data = items.pop(0)
            elif arg == "-n" and items:
                component = items.pop(0)
            elif arg == "-c" and items:
                categories.append(items.pop(0))
            elif arg == "-W":
                wait = True
            elif arg in two_values:
                del items[:2]
            elif arg in with_value:
                del items[:1]
            elif not arg.startswith("-"):
                data = arg
        described = " ".join(
            part for part in (
                f"act={action}" if action else "",
                f"cat=[{','.join(categories)}]" if categories else "",
                f"dat={self._short_uri(data)}" if data else "",
                f"cmp={component}" if component else "",
            ) if part
        )  # fmt: skip
        await io.out(f"Starting: Intent {{ {described} }}\n")
        target: str | None = None
        if component:
            target = self._resolve(component)
            if target.split("/")[0] not in self.state.packages:
                await io.err(f"Error type 3\nError: Activity class {{{target}}} does not exist.\n")
                return 255
        elif data and re.match(r"https?://", data) and action in (None, "android.intent.action.VIEW"):
            target = BROWSER
        elif action == "android.intent.action.MAIN" and "android.intent.category.HOME" in categories:
            target = LAUNCHER
        if target is None:
            await io.err(f"Error: Activity not started, unable to resolve Intent {{ {described} flg=0x10000000 }}\n")
            return 255
        self.state.foreground = target
        self.state.current_url = data if target == BROWSER else None
        if wait:
            await io.out(f"Status: ok\nLaunchState: COLD\nActivity: {target}\n"
                         "TotalTime: 312\nWaitTime: 318\nComplete\n")  # fmt: skip
        return 0

    @staticmethod
    def _short_uri(uri: str) -> str:
        match = re.match(r"([a-z][\w+.-]*://[^/]+)(/.*)?$", uri)
        return f"{match.group(1)}/..." if match else uri

    async def _am_instrument(self, args: list[str], io: CommandIO) -> int:
        raw = "-r" in args
        target = next((a for a in reversed(args) if "/" in a and not a.startswith("-")), "")
        extras: dict[str, str] = {}
        for index, arg in enumerate(args[:-2]):
            if arg == "-e":
                extras[args[index + 1]] = args[index + 2]
        package = target.split("/")[0]
        if package not in self.state.packages:
            await io.out(
                "INSTRUMENTATION_STATUS: id=ActivityManagerService\n"
                f"INSTRUMENTATION_STATUS: Error=Unable to find instrumentation info for: ComponentInfo{{{target}}}\n"
                "INSTRUMENTATION_STATUS_CODE: -1\n"
            )
            await io.err(f"android.util.AndroidException: INSTRUMENTATION_FAILED: {target}\n")
            return 1
        total = 1 if "#" in extras.get("class", "") else self.state.instrumentation_tests
        failures = min(total, self.state.instrumentation_failures)
        test_class = extras.get("class", f"{package.removesuffix('.test')}.ExampleInstrumentedTest").split("#")[0]
        lines: list[str] = []
        for number in range(1, total + 1):
            failed = number > total - failures
            if raw:
                common = (f"INSTRUMENTATION_STATUS: class={test_class}\nINSTRUMENTATION_STATUS: current={number}\n"
                          f"INSTRUMENTATION_STATUS: id=AndroidJUnitRunner\nINSTRUMENTATION_STATUS: numtests={total}\n"
                          f"INSTRUMENTATION_STATUS: stream=\nINSTRUMENTATION_STATUS: test=test{number}\n")  # fmt: skip
                lines.append(common + "INSTRUMENTATION_STATUS_CODE: 1\n")
                if failed:
                    lines.append(common.replace("stream=\n", "stack=java.lang.AssertionError: expected true\n")
                                 + "INSTRUMENTATION_STATUS_CODE: -2\n")  # fmt: skip
                else:
                    lines.append(common + "INSTRUMENTATION_STATUS_CODE: 0\n")
            else:
                lines.append(f"{test_class}:{'E' if failed else '.'}")
        summary = f"OK ({total} tests)" if not failures else f"FAILURES!!!\nTests run: {total},  Failures: {failures}"
        if raw:
            lines.append(f"INSTRUMENTATION_RESULT: stream=\n\nTime: 0.{total * 137:03d}\n\n{summary}\n\n\n"
                         "INSTRUMENTATION_CODE: -1\n")  # fmt: skip
        else:
            lines.append(f"\nTime: 0.{total * 137:03d}\n\n{summary}\n\n\n")
        await io.out("".join(line if line.endswith("\n") else line + "\n" for line in lines))
        return 0

    # -- package manager

    async def pm(self, args: list[str], io: CommandIO) -> int:
        sub = args[0] if args else ""
        rest = args[1:]
        if sub == "list" and rest[:1] == ["packages"]:
            return await self._pm_list(rest[1:], io)
        if sub == "path" and rest:
            package = self.state.packages.get(rest[-1])
            if package is None:
                return 1
            await io.out(f"package:{package.path}\n")
            return 0
        if sub == "install":
            return await self._pm_install(rest, io)
        if sub == "uninstall" and rest:
            name = rest[-1]
            if name not in self.state.packages or self.state.packages[name].system:
                await io.out("Failure [DELETE_FAILED_INTERNAL_ERROR]\n")
                return 1
            del self.state.packages[name]
            if self.state.foreground_package == name:
                self.state.go_home()
            await io.out("Success\n")
            return 0
        if sub == "clear" and rest:
            if rest[-1] not in self.state.packages:
                await io.out("Failed\n")
                return 1
            await io.out("Success\n")
            return 0
        if sub in ("grant", "revoke", "disable-user", "enable", "set-install-location", "trim-caches"):
            return 0
        if sub == "dump" and rest:
            return await self._dumpsys_package(rest[-1], io)
        if sub == "list" and rest[:1] == ["features"]:
            await io.out("feature:android.hardware.touchscreen\nfeature:android.hardware.wifi\n"
                         "feature:android.software.webview\n")  # fmt: skip
            return 0
        await io.err(f"Unknown command: {sub}\n" if sub else "Package manager (package) commands: ...\n")
        return 255

    async def _pm_list(self, args: list[str], io: CommandIO) -> int:
        options = {a for a in args if a.startswith("-")}
        text_filter = next((a for a in args if not a.startswith("-")), "")
        packages = sorted(self.state.packages.values(), key=lambda p: p.name)
        for package in packages:
            if ("-3" in options and package.system) or ("-s" in options and not package.system):
                continue
            if text_filter not in package.name:
                continue
            line = f"package:{package.path}={package.name}" if "-f" in options else f"package:{package.name}"
            await io.out(line + "\n")
        return 0

    @staticmethod
    def _manifest_of(apk: bytes) -> dict[str, str]:
        """Reads package, versionName and versionCode from a plain-text AndroidManifest.xml (as fake APKs carry)."""
        try:
            with zipfile.ZipFile(io.BytesIO(apk)) as archive:
                manifest = archive.read("AndroidManifest.xml")
        except (zipfile.BadZipFile, KeyError):
            return {}
        found = {}
        patterns = (("package", rb'package="([A-Za-z_][\w.]*)"'), ("versionName", rb'versionName="([^"]+)"'),
                    ("versionCode", rb'versionCode="(\d+)"'))  # fmt: skip
        for key, pattern in patterns:
            match = re.search(pattern, manifest)
            if match:
                found[key] = match.group(1).decode()
        return found

    async def _pm_install(self, args: list[str], io: CommandIO) -> int:
        valued = {"-i", "--user", "-p", "-S", "--install-location", "--install-reason", "--originating-uri",
                  "--referrer", "--abi", "--pkg", "--session", "--install-session"}  # fmt: skip
        size: int | None = None
        path: str | None = None
        items = list(args)
        while items:
            arg = items.pop(0)
            if arg in valued and items:
                value = items.pop(0)
                if arg == "-S":
                    size = _parse_int(value, "pm install")
            elif not arg.startswith("-"):
                path = arg
        if path is None and size is not None:
            apk, origin = await io.stdin.read(size), "streamed.apk"
        elif path is None:
            await io.err("Error: must either specify a package size or an APK file\n")
            return 255
        else:
            origin = io.path(path)
            try:
                apk = self.fs.read(origin)
            except (FileNotFoundError, IsADirectoryError):
                await io.err(f"Error: Can't open file: {origin}\nException occurred while executing 'install':\n"
                             f"java.lang.IllegalArgumentException: Error: Can't open file: {origin}\n")  # fmt: skip
                return 255
        if not apk.startswith(b"PK\x03\x04"):
            await io.out("Failure [INSTALL_PARSE_FAILED_NOT_APK: Failed to parse /data/app/vmdl.tmp/base.apk: "
                         "Failed to load asset path /data/app/vmdl.tmp/base.apk]\n")  # fmt: skip
            return 1
        manifest = self._manifest_of(apk)
        name = manifest.get("package")
        if name is None:
            stem = posixpath.basename(origin).removesuffix(".apk")
            dotted = re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", stem)
            name = stem if dotted else "com.virtual.app" + hashlib.sha1(apk).hexdigest()[:8]
        digest = hashlib.sha1(name.encode()).hexdigest()
        self.state.packages[name] = InstalledPackage(
            name=name,
            path=f"/data/app/~~{digest[:22]}==/{name}-{digest[22:]}==/base.apk",
            launcher_activity=".MainActivity",
            version_name=manifest.get("versionName", "1.0"),
            version_code=int(manifest.get("versionCode", "1")),
        )
        await io.out("Success\n")
        return 0

    async def cmd(self, args: list[str], io: CommandIO) -> int:
        """``cmd package ...`` and ``cmd activity ...`` as adb's streamed install and newer clients send them."""
        services: dict[str, Handler] = {"package": self.pm, "activity": self.am, "settings": self.settings_cmd}
        if not args:
            await io.err("cmd: No service specified; use -l to list all running services\n")
            return 20
        if args[0] == "-l":
            await io.out("Currently running services:\n" + "".join(f"  {name}\n" for name in sorted(services)))
            return 0
        handler = services.get(args[0])
        if handler is None:
            await io.err(f"cmd: Can't find service: {args[0]}\n")
            return 20
        return await handler(args[1:], io)

    async def monkey(self, args: list[str], io: CommandIO) -> int:
        packages = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-p"]
        installed = [p for p in packages if p in self.state.packages and self.state.packages[p].launcher_activity]
        await io.out("".join(f"  bash arg: {a}\n" for a in args))
        if not installed:
            await io.err("** No activities found to run, monkey aborted.\n")
            return 251
        package = self.state.packages[installed[0]]
        assert package.launcher_activity is not None
        self.state.foreground = self._resolve(f"{package.name}/{package.launcher_activity}")
        await io.out("Events injected: 1\n"
                     "## Network stats: elapsed time=14ms (0ms mobile, 0ms wifi, 14ms not connected)\n")  # fmt: skip
        return 0

    # -- input

    @staticmethod
    def _keycode(name: str) -> int:
        if name.isdigit():
            return int(name)
        code = KEYCODES.get(name.upper().removeprefix("KEYCODE_"))
        if code is None:
            raise CommandError(f"Error: Unknown keycode: {name}")
        return code

    async def input(self, args: list[str], io: CommandIO) -> int:
        items = list(args)
        if items and items[0] in INPUT_SOURCES:
            items.pop(0)
        if items[:1] == ["-d"]:
            del items[:2]
        usage = "Usage: input [<source>] [-d DISPLAY_ID] <command> [<arg>...]\n"
        if not items:
            await io.err(usage)
            return 1
        sub, params = items[0], items[1:]
        numeric = [p for p in params if not p.startswith("--")]
        expected = {"tap": (2,), "swipe": (4, 5), "draganddrop": (4, 5), "roll": (2,), "press": (0,)}
        try:
            if sub in expected:
                if len(numeric) not in expected[sub]:
                    raise ValueError
                values = [float(p) for p in numeric]
                if sub in ("swipe", "draganddrop"):
                    await asyncio.sleep((values[4] if len(values) == 5 else 300) / 1000)
            elif sub == "keyevent" and numeric:
                for key in numeric:
                    self._key(self._keycode(key))
            elif sub == "text" and params:
                pass
            elif sub == "motionevent" and len(params) == 3 and params[0].upper() in ("DOWN", "UP", "MOVE"):
                float(params[1]), float(params[2])
            elif sub == "keycombination" and params:
                [self._keycode(k) for k in params]
            else:
                raise ValueError
        except ValueError:
            await io.err(f"Error: Invalid arguments for command: {sub}\n{usage}")
            return 1
        return 0

    def _key(self, code: int) -> None:
        if code == 26:
            self.state.screen_on = not self.state.screen_on
        elif code == 224:
            self.state.screen_on = True
        elif code == 223:
            self.state.screen_on = False
        elif code in (3, 4):
            self.state.go_home()

    # -- dumpsys

    async def dumpsys(self, args: list[str], io: CommandIO) -> int:
        service = args[0] if args else ""
        rest = args[1:]
        if service == "battery":
            return await self._dumpsys_battery(rest, io)
        if service == "power":
            awake = self.state.screen_on
            await io.out(
                "POWER MANAGER (dumpsys power)\n\nPower Manager State:\n  mDirty=0x0\n"
                f"  mWakefulness={'Awake' if awake else 'Asleep'}\n  mWakefulnessChanging=false\n"
                f"  mIsPowered={str(self.state.ac_powered or self.state.usb_powered).lower()}\n"
                f"  mPlugType={1 if self.state.ac_powered else 2 if self.state.usb_powered else 0}\n"
                f"  mBatteryLevel={self.state.battery_level}\n"
                f"  mHoldingWakeLockSuspendBlocker={str(awake).lower()}\n"
                f"  mHoldingDisplaySuspendBlocker={str(awake).lower()}\n"
                f"Display Power: state={'ON' if awake else 'OFF'}\n"
            )
            return 0
        if service == "window":
            window = f"Window{{5f3c1a u0 {self.state.foreground}}}"
            width, height = self.state.display_size
            await io.out(
                "WINDOW MANAGER WINDOWS (dumpsys window windows)\n"
                f"  mCurrentFocus={window}\n"
                f"  mFocusedApp=ActivityRecord{{8e21b7 u0 {self.state.foreground} t42}}\n"
                f"  mScreenOn={str(self.state.screen_on).lower()}\n"
                f"  cur={width}x{height} app={width}x{height} rng=1080x1017-2400x2337\n"
            )
            return 0
        if service == "activity":
            fg = self.state.foreground
            await io.out(
                f"  mResumedActivity: ActivityRecord{{8e21b7 u0 {fg} t42}}\n"
                f"  ResumedActivity: ActivityRecord{{8e21b7 u0 {fg} t42}}\n"
                f"TASK {fg.split('/')[0]} id=42 userId=0\n  ACTIVITY {fg} 8e21b7 pid=4242\n"
            )
            return 0
        if service == "display":
            width, height = self.state.display_size
            await io.out(
                "DISPLAY MANAGER (dumpsys display)\n"
                f"  mViewports=[DisplayViewport{{type=INTERNAL, valid=true, isActive=true, displayId=0, "
                f"uniqueId='local:4619827259835644672', physicalPort=0, orientation=0, "
                f"logicalFrame=Rect(0, 0 - {width}, {height}), physicalFrame=Rect(0, 0 - {width}, {height}), "
                f"deviceWidth={width}, deviceHeight={height}}}]\n"
                f"  mScreenState={'ON' if self.state.screen_on else 'OFF'}\n"
            )
            return 0
        if service == "package" and rest:
            return await self._dumpsys_package(rest[-1], io)
        if service == "SurfaceFlinger":
            await io.out('Display 4619827259835644672 (HWC display 0): port=0 pnpId=GGL '
                         'displayName="Virtual Display"\n')  # fmt: skip
            return 0
        if not service or service == "-l":
            names = ["activity", "battery", "display", "package", "power", "SurfaceFlinger", "window"]
            await io.out("Currently running services:\n" + "".join(f"  {n}\n" for n in names))
            return 0
        await io.err(f"Can't find service: {service}\n")
        return 0

    async def _dumpsys_battery(self, args: list[str], io: CommandIO) -> int:
        state = self.state
        if args[:1] == ["set"] and len(args) == 3:
            value = _parse_int(args[2], "dumpsys battery set")
            if args[1] == "level":
                state.battery_level = max(0, min(100, value))
            elif args[1] in ("ac", "usb"):
                setattr(state, f"{args[1]}_powered", bool(value))
            return 0
        if args[:1] == ["unplug"]:
            state.ac_powered = state.usb_powered = False
            return 0
        if args[:1] == ["reset"]:
            state.usb_powered = True
            return 0
        powered = state.ac_powered or state.usb_powered
        status = 5 if powered and state.battery_level >= 100 else 2 if powered else 3
        await io.out(
            "Current Battery Service state:\n"
            f"  AC powered: {str(state.ac_powered).lower()}\n"
            f"  USB powered: {str(state.usb_powered).lower()}\n"
            "  Wireless powered: false\n  Dock powered: false\n"
            "  Max charging current: 500000\n  Max charging voltage: 5000000\n"
            f"  Charge counter: {state.battery_level * 40000}\n"
            f"  status: {status}\n  health: 2\n  present: true\n"
            f"  level: {state.battery_level}\n  scale: 100\n"
            f"  voltage: {3600 + state.battery_level * 6}\n  temperature: 285\n  technology: Li-ion\n"
        )
        return 0

    async def _dumpsys_package(self, name: str, io: CommandIO) -> int:
        package = self.state.packages.get(name)
        if package is None:
            await io.out(f"Unable to find package: {name}\n")
            return 0
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(package.installed_at))
        digest = hashlib.sha1(name.encode()).hexdigest()
        flags = "SYSTEM HAS_CODE ALLOW_CLEAR_USER_DATA" if package.system else "HAS_CODE ALLOW_CLEAR_USER_DATA"
        await io.out(
            f"Packages:\n  Package [{name}] ({digest[:7]}):\n    userId=10{int(digest[:4], 16) % 1000:03d}\n"
            f"    pkg=Package{{{digest[7:14]} {name}}}\n    codePath={posixpath.dirname(package.path)}\n"
            f"    versionCode={package.version_code} minSdk=24 targetSdk={self.state.sdk}\n"
            f"    versionName={package.version_name}\n    flags=[ {flags} ]\n    pkgFlags=[ {flags} ]\n"
            f"    timeStamp={when}\n    firstInstallTime={when}\n    lastUpdateTime={when}\n"
            f"    signatures=PackageSignatures{{{digest[14:21]} version:2, signatures:[{digest[21:29]}], "
            "past signatures:[]}\n"
        )
        return 0

    # -- screen, window manager, settings

    async def screencap(self, args: list[str], io: CommandIO) -> int:
        png = "-p" in args or any(a.startswith("-") and "p" in a for a in args)
        target = next((a for a in args if not a.startswith("-") and a not in _values_of(args, "-d")), None)
        if target is not None and target.endswith(".png"):
            png = True
        data = await self.renderer.png(self.state) if png else self.renderer.raw(self.state)
        if target is None:
            await io.out(data)
            return 0
        try:
            self.fs.write(io.path(target), data)
        except (PermissionError, FileNotFoundError, IsADirectoryError):
            raise CommandError(f"Error opening file: {target} (Permission denied)") from None
        return 0

    async def uiautomator(self, args: list[str], io: CommandIO) -> int:
        if args[:1] != ["dump"]:
            await io.err("Usage: uiautomator <subcommand> [options]\n")
            return 1
        target = next((a for a in args[1:] if not a.startswith("-")), "/sdcard/window_dump.xml")
        width, height = self.state.display_size
        package = self.state.foreground_package
        xml = (
            "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><hierarchy rotation=\"0\">"
            f'<node index="0" text="" resource-id="" class="android.widget.FrameLayout" package="{package}" '
            f'content-desc="" clickable="false" enabled="true" bounds="[0,0][{width},{height}]" /></hierarchy>'
        )
        try:
            self.fs.write(io.path(target), xml.encode())
        except (PermissionError, FileNotFoundError, IsADirectoryError):
            raise CommandError(f"ERROR: could not write {target}") from None
        await io.err("UI hierchary dumped to: " + target + "\n")
        return 0

    async def wm(self, args: list[str], io: CommandIO) -> int:
        if args[:1] == ["size"]:
            if len(args) == 1:
                width, height = self.state.screen_size
                override = self.state.size_override
                extra = f"Override size: {override[0]}x{override[1]}\n" if override else ""
                await io.out(f"Physical size: {width}x{height}\n{extra}")
            elif args[1] == "reset":
                self.state.size_override = None
            else:
                match = re.fullmatch(r"(\d+)x(\d+)", args[1])
                if not match:
                    raise CommandError(f"Error: bad size {args[1]}", 255)
                self.state.size_override = (int(match.group(1)), int(match.group(2)))
            return 0
        if args[:1] == ["density"]:
            await io.out(f"Physical density: {self.state.density}\n")
            return 0
        await io.err("Window manager (window) commands: ...\n")
        return 255

    async def settings_cmd(self, args: list[str], io: CommandIO) -> int:
        items = [a for a in args if not a.startswith("--user")]
        if len(items) >= 2 and items[1] in self.state.settings:
            verb, table = items[0], self.state.settings[items[1]]
            if verb == "get" and len(items) == 3:
                await io.out(table.get(items[2], "null") + "\n")
                return 0
            if verb == "put" and len(items) >= 4:
                table[items[2]] = items[3]
                return 0
            if verb == "delete" and len(items) == 3:
                await io.out(f"Deleted {int(table.pop(items[2], None) is not None)} rows\n")
                return 0
            if verb == "list":
                await io.out("".join(f"{k}={v}\n" for k, v in sorted(table.items())))
                return 0
        await io.err("Invalid command: " + " ".join(args) + "\n")
        return 255

    async def svc(self, args: list[str], io: CommandIO) -> int:
        if len(args) >= 2 and args[0] in ("wifi", "data", "bluetooth", "nfc", "power", "usb"):
            if args[0] == "power" and args[1] == "stayon":
                self.state.settings["global"]["stay_on_while_plugged_in"] = "7" if args[2:3] == ["true"] else "0"
            return 0
        await io.out("Available commands:\n    help\n    power\n    data\n    wifi\n    usb\n    nfc\n    bluetooth\n")
        return 0

    async def reboot(self, args: list[str], io: CommandIO) -> int:
        self.state.request_reboot()
        return 0


def _values_of(args: list[str], option: str) -> set[str]:
    return {args[i + 1] for i, a in enumerate(args[:-1]) if a == option}


# --------------------------------------------------------------------------------------------- interpreter


class VirtualShell:
    """One sh session on a virtual phone: runs command lines against its state and logs each command it runs."""

    def __init__(self, state: PhoneState, service: str, renderer: ScreenRenderer | None = None) -> None:
        self.state = state
        self.service = service
        self.renderer = renderer or ScreenRenderer()
        self.cwd = "/"
        self.last_status = 0
        self.exited = False
        self.env = {
            "HOME": "/", "SHELL": SH, "USER": "shell", "HOSTNAME": state.device, "TMPDIR": "/data/local/tmp",
            "EXTERNAL_STORAGE": "/sdcard", "ANDROID_DATA": "/data", "ANDROID_ROOT": "/system",
            "PATH": "/product/bin:/apex/com.android.runtime/bin:/system/bin:/system/xbin:/odm/bin:/vendor/bin",
        }  # fmt: skip
        self._parser = ShellParser()
        self._commands: dict[str, Handler] = {
            **CoreUtils(state).table(),
            **AndroidTools(state, self.renderer).table(),
            "sh": self._sh, "cd": self._cd, "pwd": self._pwd, "exit": self._exit, "export": self._export,
        }  # fmt: skip

    @property
    def prompt(self) -> str:
        return f"{self.state.device}:{self.cwd} $ "

    async def run(self, line: str, io: CommandIO) -> int:
        """Runs one command line and returns its exit status (as ``sh -c`` would)."""
        try:
            items = self._parser.parse(line)
        except ShellSyntaxError as exc:
            await io.err(f"{SH}: syntax error: {exc}\n")
            self.last_status = 1
            return 1
        status = 0
        try:
            for item in items:
                if (item.connector == "&&" and status != 0) or (item.connector == "||" and status == 0):
                    continue
                status = await self._run_pipeline(item.pipeline, io)
                self.last_status = status
        except ShellExit as exc:
            self.exited = True
            status = self.last_status = exc.code
        return status

    def _expand(self, word: Word) -> str:
        out = []
        for part in word.parts:
            if not part.variable:
                out.append(part.text)
            elif part.text == "?":
                out.append(str(self.last_status))
            elif part.text == "$":
                out.append("4242")
            elif part.text == "#":
                out.append("0")
            elif part.text == "0":
                out.append(SH)
            else:
                out.append(self.env.get(part.text, ""))
        return "".join(out)

    async def _run_pipeline(self, pipeline: tuple[SimpleCommand, ...], io: CommandIO) -> int:
        stdin = io.stdin
        status = 0
        for index, command in enumerate(pipeline):
            last = index == len(pipeline) - 1
            sink: OutputSink = io.stdout if last else BufferSink()
            status = await self._run_simple(command, CommandIO(stdin, sink, io.stderr, self.cwd))
            if isinstance(sink, BufferSink) and not last:
                stdin = BytesStdin(bytes(sink.data))
        return status

    async def _run_simple(self, command: SimpleCommand, io: CommandIO) -> int:
        argv = [self._expand(word) for word in command.words]
        files: list[tuple[str, BufferSink, bool]] = []
        for redirect in command.redirects:
            target = self._expand(redirect.target)
            if redirect.op == ">&":
                if target not in ("1", "2"):
                    await io.err(f"{SH}: {target}: bad file descriptor\n")
                    return 1
                chosen = io.stdout if target == "1" else io.stderr
                io = CommandIO(io.stdin, chosen, io.stderr, io.cwd) if redirect.fd == 1 else \
                    CommandIO(io.stdin, io.stdout, chosen, io.cwd)  # fmt: skip
                continue
            path = io.path(target)
            if redirect.op == "<":
                try:
                    io = CommandIO(BytesStdin(b"" if path == "/dev/null" else self.state.files.read(path)),
                                   io.stdout, io.stderr, io.cwd)  # fmt: skip
                except (FileNotFoundError, IsADirectoryError):
                    await io.err(f"{SH}: can't open '{target}': No such file or directory\n")
                    return 1
                continue
            sink: OutputSink = NullSink()
            if path != "/dev/null":
                try:
                    self.state.files.write(path, b"", append=redirect.op == ">>")
                except (PermissionError, FileNotFoundError, IsADirectoryError):
                    await io.err(f"{SH}: can't create {target}: Permission denied\n")
                    return 1
                buffer = BufferSink()
                files.append((path, buffer, redirect.op == ">>"))
                sink = buffer
            io = CommandIO(io.stdin, sink, io.stderr, io.cwd) if redirect.fd == 1 else \
                CommandIO(io.stdin, io.stdout, sink, io.cwd)  # fmt: skip
        status = await self._dispatch(argv, io) if argv else 0
        for path, buffer, append in files:
            self.state.files.write(path, bytes(buffer.data), append=append)
        return status

    def _lookup(self, name: str) -> Handler | None:
        if "/" in name:
            folder, base = posixpath.split(name)
            return self._commands.get(base) if folder in BIN_DIRS else None
        return self._commands.get(name)

    async def _dispatch(self, argv: list[str], io: CommandIO) -> int:
        self.state.actions.append(self.service, argv)
        handler = self._lookup(argv[0])
        if handler is None:
            await io.err(f"{SH}: {argv[0]}: inaccessible or not found\n")
            return 127
        try:
            return await handler(argv[1:], io)
        except CommandError as exc:
            await io.err(exc.message + "\n")
            return exc.code

    async def _sh(self, args: list[str], io: CommandIO) -> int:
        if len(args) >= 2 and args[0] == "-c":
            nested = VirtualShell(self.state, self.service, self.renderer)
            nested.cwd = self.cwd
            return await nested.run(args[1], io)
        await io.err(f"{SH}: interactive sub-shells are not supported\n")
        return 2

    async def _cd(self, args: list[str], io: CommandIO) -> int:
        path = io.path(args[0] if args else "/")
        if not self.state.files.is_dir(path):
            await io.err(f"{SH}: cd: {args[0]}: No such file or directory\n")
            return 2
        self.cwd = path
        return 0

    async def _pwd(self, args: list[str], io: CommandIO) -> int:
        await io.out(self.cwd + "\n")
        return 0

    async def _exit(self, args: list[str], io: CommandIO) -> int:
        raise ShellExit(_parse_int(args[0], "exit") & 0xFF if args else self.last_status)

    async def _export(self, args: list[str], io: CommandIO) -> int:
        for arg in args:
            name, sep, value = arg.partition("=")
            if sep:
                self.env[name] = value
        return 0
