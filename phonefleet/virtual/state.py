"""What a virtual phone knows about itself: its properties, packages, screen, files and the log of
every command a client made it run (what tests and demos assert on)."""

from __future__ import annotations

import asyncio
import posixpath
import shlex
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from phonefleet.virtual.faults import HOT_TENTHS_C, Fault
from phonefleet.virtual.logbuffer import LogBuffer

SDK_BY_RELEASE = {
    "7.0": 24, "7.1": 25, "8.0": 26, "8.1": 27, "9": 28, "10": 29, "11": 30,
    "12": 31, "12L": 32, "13": 33, "14": 34, "15": 35, "16": 36,
}  # fmt: skip

LAUNCHER = "com.google.android.apps.nexuslauncher/.NexusLauncherActivity"
BROWSER = "com.android.chrome/com.google.android.apps.chrome.Main"
WRITABLE_ROOTS = ("/data/local/tmp", "/sdcard")
STORAGE_ALIASES = ("/storage/emulated/0", "/storage/self/primary", "/mnt/sdcard")


# --------------------------------------------------------------------------------------------- the action log


@dataclass(frozen=True)
class ActionRecord:
    """One command a client made the phone run."""

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


# --------------------------------------------------------------------------------------------- files


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
            self.mkdir(parent)
        old = self._files.get(path)
        if append and old is not None:
            data = old.data + data
            mode = old.mode
        self._files[path] = VirtualFile(data, mode & 0o7777, int(time.time()) if mtime is None else mtime)

    def mkdir(self, path: str) -> None:
        """Makes the directory and its missing parents (``mkdir -p``), inside the writable roots."""
        path = self.normalize(path)
        if path in self._dirs:
            return
        if path in self._files:
            raise FileExistsError(path)
        if not self.writable(path):
            raise PermissionError(path)
        parent = posixpath.dirname(path)
        if parent not in self._dirs:
            self.mkdir(parent)
        self._dirs[path] = int(time.time())

    def remove(self, path: str) -> None:
        """Removes a file (``rm``: directories are refused)."""
        path = self.normalize(path)
        if path in self._dirs:
            raise IsADirectoryError(path)
        if path not in self._files:
            raise FileNotFoundError(path)
        if not self.writable(path):
            raise PermissionError(path)
        del self._files[path]


# --------------------------------------------------------------------------------------------- the phone


@dataclass
class InstalledPackage:
    name: str
    path: str
    launcher_activity: str | None
    system: bool = False


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
        folder = name.rsplit(".", 1)[-1].capitalize()
        packages[name] = InstalledPackage(name, f"/system/app/{folder}/{folder}.apk", activity, system=True)
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
    battery_tenths_c: int = 285
    """Battery temperature as ``dumpsys battery`` says it, in tenths of a degree (``hot`` says 520)."""
    ac_powered: bool = False
    usb_powered: bool = True
    wireless_powered: bool = False
    screen_on: bool = True
    screen_locked: bool = False
    """The keyguard shows: set when the screen goes off, dismissed by the menu key (``input keyevent 82``)."""
    booted: bool = True
    """``sys.boot_completed`` is 1 (empty from a reboot until the boot finishes)."""
    data_size_kb: int = 115_345_400
    data_free_kb: int = 52_428_800
    fault: Fault = Fault.none
    am_fail_rate: float = 0.0
    """The chance that an ``am start`` fails on its own (ordinary noise, not a fault: benchmarks of the
    quarantine policy give every phone some, and no healthy phone may be quarantined for it)."""
    display_size: tuple[int, int] = (1080, 2400)
    """The panel's natural (portrait) size, as ``wm size`` says it."""
    rotation: int = 0
    """Quarter turns (``settings put system user_rotation``): odd ones swap what screencap and input see."""
    last_touch: tuple[int, int] | None = None
    """Where the last ``input tap`` or swipe ended (the screen draws a mark there)."""
    inputs: int = 0
    """How many ``input`` commands changed the screen so far (the screen's band changes colour with each)."""
    animate: bool = False
    """The picture changes with every screencap (a clock in the status bar): benchmarks of the live screen."""
    frames: int = 0
    density: int = 420
    foreground: str = LAUNCHER
    current_url: str | None = None
    instrumentation_tests: int = 3
    instrumentation_failures: int = 0
    instrumentation_test_sec: float = 0.0
    """How long each instrumented test runs (``am instrument`` prints each test's lines as it starts and ends)."""
    packages: dict[str, InstalledPackage] = field(default_factory=_system_packages)
    files: VirtualFileSystem = field(default_factory=VirtualFileSystem)
    actions: ActionLog = field(default_factory=ActionLog)
    request_reboot: Callable[[], None] = lambda: None  # set by the phone: drop off the adb server and boot again
    clock_offset_sec: float = 0.0
    """The phone's clock runs this far ahead of the host's (``date``, logcat's stamps)."""
    log: LogBuffer = field(default_factory=LogBuffer)
    crashing_packages: set[str] = field(default_factory=set)
    """Packages whose start (``am start``, ``monkey``) crashes: a ``FATAL EXCEPTION`` in logcat, back home."""
    anr_packages: set[str] = field(default_factory=set)
    """Packages whose start hangs: an ``ANR in`` the package in logcat."""
    _next_pid: int = 4000

    def now(self) -> float:
        """The phone's clock, epoch seconds."""
        return time.time() + self.clock_offset_sec

    def pid_of(self, package: str) -> int:
        """A process id for a package's process (a new one each start)."""
        self._next_pid += 7
        return self._next_pid

    def logd(self, level: str, tag: str, message: str, *, pid: int = 1234, tid: int | None = None) -> None:
        """Write to the phone's log (system_server is pid 1234)."""
        self.log.add(self.now(), level, tag, message, pid=pid, tid=tid)

    @property
    def brand(self) -> str:
        return self.manufacturer.lower()

    def properties(self) -> dict[str, str]:
        build_id = f"VP{self.sdk}.{self.android_version}"
        fingerprint = f"{self.brand}/{self.product}/{self.device}:{self.android_version}/{build_id}/1:user/release-keys"
        return {
            "ro.serialno": self.serialno,
            "ro.boot.serialno": self.serialno,
            "ro.product.model": self.model,
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.brand": self.brand,
            "ro.product.name": self.product,
            "ro.product.device": self.device,
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
            "ro.build.version.release": self.android_version,
            "ro.build.version.sdk": str(self.sdk),
            "ro.build.id": build_id,
            "ro.build.type": "user",
            "ro.build.fingerprint": fingerprint,
            "ro.sf.lcd_density": str(self.density),
            **({"sys.boot_completed": "1", "dev.bootcomplete": "1"} if self.booted else {}),
        }

    @property
    def battery_temperature_tenths(self) -> int:
        return HOT_TENTHS_C if self.fault is Fault.hot else self.battery_tenths_c

    @property
    def screen_size(self) -> tuple[int, int]:
        """What screencap gives and input counts in: the panel turned by the rotation."""
        width, height = self.display_size
        return (height, width) if self.rotation % 2 else (width, height)

    @property
    def foreground_package(self) -> str:
        return self.foreground.split("/", 1)[0]

    def go_home(self) -> None:
        self.foreground = LAUNCHER
