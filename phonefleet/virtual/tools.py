"""The commands a virtual phone's sh knows: the Android tools and the few toybox ones its clients send.

Only what phonefleet sends is here: the agent's steps (``am``, ``monkey``, ``input``, ``pm install``,
``screencap -p``, ``rm``), its health probe (``getprop``, ``dumpsys battery|power|window policy``, ``df``,
``grep -E``), adbutils' helpers the
tests call (``dumpsys window``, ``pm list packages``, ``reboot``, ``wm size``, its ``echo`` exit-code
trailer) and the shell features the tests check (``cat``, ``grep``, ``true``, ``false``). Anything else
is "not found" (exit 127), as on a phone without that tool.
"""

import asyncio
import hashlib
import io
import posixpath
import random
import re
import zipfile
from datetime import UTC, datetime

from phonefleet.virtual.commandio import CommandError, CommandIO, Handler
from phonefleet.virtual.faults import Fault
from phonefleet.virtual.logcat import logcat
from phonefleet.virtual.screen import ScreenRenderer
from phonefleet.virtual.state import BROWSER, InstalledPackage, PhoneState

KEYCODES = {
    "HOME": 3, "BACK": 4, "CALL": 5, "ENDCALL": 6, "DPAD_UP": 19, "DPAD_DOWN": 20, "DPAD_LEFT": 21,
    "DPAD_RIGHT": 22, "DPAD_CENTER": 23, "VOLUME_UP": 24, "VOLUME_DOWN": 25, "POWER": 26, "CAMERA": 27,
    "TAB": 61, "SPACE": 62, "ENTER": 66, "DEL": 67, "MENU": 82, "SEARCH": 84, "MEDIA_PLAY_PAUSE": 85,
    "PAGE_UP": 92, "PAGE_DOWN": 93, "ESCAPE": 111, "FORWARD_DEL": 112, "MOVE_HOME": 122, "MOVE_END": 123,
    "VOLUME_MUTE": 164, "APP_SWITCH": 187, "SLEEP": 223, "WAKEUP": 224,
}  # fmt: skip
INPUT_ARGUMENTS = {"tap": (2,), "swipe": (4, 5)}
"""How many numbers each pointer command of ``input`` takes."""


def _lines(data: bytes) -> list[str]:
    return data.decode(errors="replace").splitlines()


class Tools:
    """Every command, acting on one phone's state."""

    def __init__(self, state: PhoneState, renderer: ScreenRenderer) -> None:
        self.state = state
        self.fs = state.files
        self.renderer = renderer

    def table(self) -> dict[str, Handler]:
        return {
            "echo": self.echo, "true": self.true, "false": self.false, "cat": self.cat, "grep": self.grep,
            "rm": self.rm, "getprop": self.getprop, "am": self.am, "pm": self.pm, "monkey": self.monkey,
            "input": self.input, "dumpsys": self.dumpsys, "screencap": self.screencap, "wm": self.wm,
            "reboot": self.reboot, "df": self.df, "date": self.date, "logcat": self.logcat,
            "settings": self.settings,
        }  # fmt: skip

    # -- toybox

    async def true(self, args: list[str], io: CommandIO) -> int:
        return 0

    async def false(self, args: list[str], io: CommandIO) -> int:
        return 1

    async def echo(self, args: list[str], io: CommandIO) -> int:
        newline = args[:1] != ["-n"]
        await io.out(" ".join(args if newline else args[1:]) + ("\n" if newline else ""))
        return 0

    async def _read_file(self, name: str, io: CommandIO) -> bytes:
        try:
            return self.fs.read(io.path(name))
        except IsADirectoryError:
            raise CommandError(f"{name}: Is a directory") from None
        except FileNotFoundError:
            raise CommandError(f"{name}: No such file or directory") from None

    async def cat(self, args: list[str], io: CommandIO) -> int:
        if not args:
            await io.out(await io.stdin.read())
            return 0
        status = 0
        for name in args:
            try:
                await io.out(await self._read_file(name, io))
            except CommandError as exc:
                await io.err(f"cat: {exc.message}\n")
                status = 1
        return status

    async def grep(self, args: list[str], io: CommandIO) -> int:
        """``grep [-civq] PATTERN [FILE...]``."""
        options = {flag for arg in args if arg.startswith("-") for flag in arg[1:]}
        rest = [arg for arg in args if not arg.startswith("-")]
        if not rest:
            raise CommandError("grep: no pattern", 2)
        regex = re.compile(rest[0], re.IGNORECASE if "i" in options else 0)
        data = b"".join([await self._read_file(n, io) for n in rest[1:]]) if rest[1:] else await io.stdin.read()
        matched = [line for line in _lines(data) if bool(regex.search(line)) != ("v" in options)]
        if "c" in options:
            await io.out(f"{len(matched)}\n")
        elif "q" not in options:
            await io.out("".join(line + "\n" for line in matched))
        return 0 if matched else 1

    async def rm(self, args: list[str], io: CommandIO) -> int:
        """``rm [-f] FILE...`` (no directories)."""
        force = "-f" in args
        status = 0
        for name in (a for a in args if not a.startswith("-")):
            try:
                self.fs.remove(io.path(name))
            except FileNotFoundError:
                if not force:
                    await io.err(f"rm: {name}: No such file or directory\n")
                    status = 1
            except (IsADirectoryError, PermissionError) as exc:
                reason = "Is a directory" if isinstance(exc, IsADirectoryError) else "Permission denied"
                await io.err(f"rm: {name}: {reason}\n")
                status = 1
        return status

    # -- properties, power and the reboot

    async def getprop(self, args: list[str], io: CommandIO) -> int:
        props = self.state.properties()
        if not args:
            await io.out("".join(f"[{key}]: [{props[key]}]\n" for key in sorted(props)))
        else:
            await io.out(props.get(args[0], args[1] if len(args) > 1 else "") + "\n")
        return 0

    async def reboot(self, args: list[str], io: CommandIO) -> int:
        self.state.request_reboot()
        return 0

    async def date(self, args: list[str], io: CommandIO) -> int:
        """``date [+FORMAT]`` by the phone's clock (UTC); ``%N`` as toybox knows it (nanoseconds)."""
        now = self.state.now()
        stamp = datetime.fromtimestamp(now, UTC)
        fmt = args[0][1:] if args and args[0].startswith("+") else "%a %b %d %H:%M:%S UTC %Y"
        fmt = fmt.replace("%s", str(int(now))).replace("%N", f"{stamp.microsecond * 1000:09d}")
        await io.out(stamp.strftime(fmt) + "\n")
        return 0

    async def logcat(self, args: list[str], io: CommandIO) -> int:
        return await logcat(self.state.log, self.state.now(), args, io)

    def _started(self, activity: str) -> None:
        """An activity came to the front, or its app crashed or hung starting (``crashing_packages``,
        ``anr_packages``): what the phone's log says of it."""
        package = activity.split("/", maxsplit=1)[0]
        pid = self.state.pid_of(package)
        self.state.logd("I", "ActivityManager", f"Start proc {pid}:{package}/u0a{pid % 1000} for activity "
                                                f"{{{activity}}}")
        self.state.logd("I", "ActivityTaskManager", f"START u0 {{cmp={activity}}} from uid 2000")
        if package in self.state.crashing_packages:
            self.state.logd("E", "AndroidRuntime", "FATAL EXCEPTION: main", pid=pid)
            self.state.logd("E", "AndroidRuntime", f"Process: {package}, PID: {pid}", pid=pid)
            self.state.logd("E", "AndroidRuntime", "java.lang.RuntimeException: Unable to start activity "
                            f"ComponentInfo{{{activity}}}: java.lang.IllegalStateException: virtual crash\n"
                            "\tat android.app.ActivityThread.performLaunchActivity(ActivityThread.java:3449)",
                            pid=pid)
            self.state.logd("I", "Process", f"Sending signal. PID: {pid} SIG: 9", pid=pid)
            self.state.go_home()
            return
        if package in self.state.anr_packages:
            self.state.logd("E", "ActivityManager", f"ANR in {package} ({activity})")
            self.state.logd("E", "ActivityManager", f"PID: {pid}\nReason: Input dispatching timed out")
        self.state.logd("I", "ActivityTaskManager", f"Displayed {activity}: +312ms")

    async def df(self, args: list[str], io: CommandIO) -> int:
        """``df [-k] [/data]``: toybox's columns in 1K blocks; /data is the only filesystem here."""
        paths = [a for a in args if not a.startswith("-")] or ["/data"]
        size, free = self.state.data_size_kb, self.state.data_free_kb
        used = size - free
        await io.out("Filesystem      1K-blocks     Used Available Use% Mounted on\n")
        for _path in paths:
            await io.out(f"/dev/block/dm-5 {size:>9} {used:>8} {free:>9} {100 * used // max(size, 1):>3}% /data\n")
        return 0

    # -- activity manager

    async def am(self, args: list[str], io: CommandIO) -> int:
        sub, rest = (args[0], args[1:]) if args else ("", [])
        if sub == "start":
            return await self._am_start(rest, io)
        if sub == "force-stop" and rest:
            self.state.logd("I", "ActivityManager", f"Force stopping {rest[-1]} appid=10123 user=0: from pid 5678")
            if self.state.foreground_package == rest[-1]:
                self.state.go_home()
            return 0
        if sub == "instrument":
            return await self._am_instrument(rest, io)
        await io.err(f"Unknown command: {sub}\n")
        return 255

    def _resolve(self, component: str) -> str:
        package, _, activity = component.partition("/")
        if activity.startswith("."):
            activity = package + activity
        return f"{package}/{activity}"

    async def _am_start(self, args: list[str], io: CommandIO) -> int:
        """``am start [-a ACTION] [-d URI] [-n COMPONENT] [URI | PACKAGE | COMPONENT]``."""
        if self.state.fault is Fault.amfail or (self.state.am_fail_rate and random.random() < self.state.am_fail_rate):
            await io.err("Exception occurred while executing 'start':\n"
                         "java.lang.IllegalStateException: activity manager not responding\n")
            return 255
        named: dict[str, str] = {}
        bare: list[str] = []
        items = list(args)
        while items:
            arg = items.pop(0)
            if arg in ("-a", "-d", "-n") and items:
                named[arg] = items.pop(0)
            elif not arg.startswith("-"):
                bare.append(arg)
        for arg in bare:  # as am reads them: a URI, else a component, else a package to resolve in
            named.setdefault("-d" if "://" in arg else "-n" if "/" in arg else "-p", arg)
        action, data, component, package = (named.get(k) for k in ("-a", "-d", "-n", "-p"))
        described = " ".join(part for part in (f"act={action}" if action else "",
                                               f"dat={self._short_uri(data)}" if data else "",
                                               f"cmp={component}" if component else "") if part)
        await io.out(f"Starting: Intent {{ {described} }}\n")
        target = self._target(action, data, component, package)
        if target is None:
            await io.err(f"Error: Activity not started, unable to resolve Intent {{ {described} flg=0x10000000 }}\n")
            return 255
        self.state.foreground = target
        self.state.current_url = data if data is not None and target.split("/")[0] == BROWSER.split("/")[0] else None
        self._started(target)
        return 0

    def _target(self, action: str | None, data: str | None, component: str | None, package: str | None) -> str | None:
        """The activity an intent starts, or None when nothing on the phone resolves it."""
        if component:
            target = self._resolve(component)
            return target if target.split("/")[0] in self.state.packages else None
        if package:
            found = self.state.packages.get(package)
            if found is None or found.launcher_activity is None:
                return None
            return self._resolve(f"{package}/{found.launcher_activity}")
        if data and re.match(r"https?://", data) and action in (None, "android.intent.action.VIEW"):
            return BROWSER
        return None

    @staticmethod
    def _short_uri(uri: str) -> str:
        match = re.match(r"([a-z][\w+.-]*://[^/]+)(/.*)?$", uri)
        return f"{match.group(1)}/..." if match else uri

    async def _am_instrument(self, args: list[str], io: CommandIO) -> int:
        """``am instrument -w [-r] [-e KEY VALUE]... PACKAGE/RUNNER``: the phone's configured passes and failures."""
        target = next((a for a in reversed(args) if "/" in a and not a.startswith("-")), "")
        extras = {args[i + 1]: args[i + 2] for i, arg in enumerate(args[:-2]) if arg == "-e"}
        package = target.split("/")[0]
        if package not in self.state.packages:
            await io.out("INSTRUMENTATION_STATUS: id=ActivityManagerService\n"
                         f"INSTRUMENTATION_STATUS: Error=Unable to find instrumentation info for: "
                         f"ComponentInfo{{{target}}}\nINSTRUMENTATION_STATUS_CODE: -1\n")
            await io.err(f"android.util.AndroidException: INSTRUMENTATION_FAILED: {target}\n")
            return 1
        total = 1 if "#" in extras.get("class", "") else self.state.instrumentation_tests
        failures = min(total, self.state.instrumentation_failures)
        test_class = extras.get("class", f"{package.removesuffix('.test')}.ExampleInstrumentedTest").split("#")[0]
        raw = "-r" in args
        for number in range(1, total + 1):  # each test's lines as it starts and ends (-r: status blocks)
            failed = number > total - failures
            common = (f"INSTRUMENTATION_STATUS: class={test_class}\nINSTRUMENTATION_STATUS: current={number}\n"
                      f"INSTRUMENTATION_STATUS: numtests={total}\nINSTRUMENTATION_STATUS: test=test{number}\n")
            if raw:
                await io.out(common + "INSTRUMENTATION_STATUS_CODE: 1\n")
            if self.state.instrumentation_test_sec:
                await asyncio.sleep(self.state.instrumentation_test_sec)
            if raw:
                stack = (f"INSTRUMENTATION_STATUS: stack=java.lang.AssertionError: test{number}\n"
                         f"\tat {test_class}.test{number}({test_class.rsplit('.', 1)[-1]}.java:{number * 10})\n"
                         if failed else "")
                await io.out(common + stack + f"INSTRUMENTATION_STATUS_CODE: {-2 if failed else 0}\n")
            else:
                await io.out(f"{test_class}:{'E' if failed else '.'}\n")
        summary = f"OK ({total} tests)" if not failures else f"FAILURES!!!\nTests run: {total},  Failures: {failures}"
        result = f"\nTime: 0.{total * 137:03d}\n\n{summary}\n\n\n"
        await io.out(f"INSTRUMENTATION_RESULT: stream={result}INSTRUMENTATION_CODE: -1\n" if raw else result)
        return 0

    async def monkey(self, args: list[str], io: CommandIO) -> int:
        """``monkey -p PACKAGE ... 1``: brings the package's launcher activity to the front."""
        if self.state.fault is Fault.amfail:
            await io.err("** Failed talking with activity manager!\n** monkey aborted.\n")
            return 252
        packages = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-p"]
        installed = [self.state.packages[p] for p in packages if p in self.state.packages]
        launchable = [p for p in installed if p.launcher_activity is not None]
        if not launchable:
            await io.err("** No activities found to run, monkey aborted.\n")
            return 251
        package = launchable[0]
        self.state.foreground = self._resolve(f"{package.name}/{package.launcher_activity}")
        self._started(self.state.foreground)
        await io.out("Events injected: 1\n")
        return 0

    # -- package manager

    async def pm(self, args: list[str], io: CommandIO) -> int:
        sub, rest = (args[0], args[1:]) if args else ("", [])
        if sub == "list" and rest[:1] == ["packages"]:
            options = {a for a in rest[1:] if a.startswith("-")}
            text = next((a for a in rest[1:] if not a.startswith("-")), "")
            for package in sorted(self.state.packages.values(), key=lambda p: p.name):
                wanted = not (("-3" in options and package.system) or ("-s" in options and not package.system))
                if wanted and text in package.name:
                    await io.out(f"package:{package.name}\n")
            return 0
        if sub == "install":
            return await self._pm_install(rest, io)
        await io.err(f"Unknown command: {sub}\n")
        return 255

    @staticmethod
    def _package_of(apk: bytes) -> str | None:
        """The package a (fake) APK names in its plain-text AndroidManifest.xml."""
        try:
            with zipfile.ZipFile(io.BytesIO(apk)) as archive:
                manifest = archive.read("AndroidManifest.xml")
        except (zipfile.BadZipFile, KeyError):
            return None
        match = re.search(rb'package="([A-Za-z_][\w.]*)"', manifest)
        return match.group(1).decode() if match else None

    async def _pm_install(self, args: list[str], io: CommandIO) -> int:
        """``pm install [-r] [-t] [-g] PATH``."""
        path = next((a for a in reversed(args) if not a.startswith("-")), None)
        if path is None:
            await io.err("Error: must either specify a package size or an APK file\n")
            return 255
        origin = io.path(path)
        try:
            apk = self.fs.read(origin)
        except (FileNotFoundError, IsADirectoryError):
            await io.err(f"Error: Can't open file: {origin}\n")
            return 255
        if not apk.startswith(b"PK\x03\x04"):
            await io.out("Failure [INSTALL_PARSE_FAILED_NOT_APK: Failed to parse /data/app/vmdl.tmp/base.apk]\n")
            return 1
        name = self._package_of(apk)
        if name is None:
            stem = posixpath.basename(origin).removesuffix(".apk")
            dotted = re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", stem)
            name = stem if dotted else "com.virtual.app" + hashlib.sha1(apk).hexdigest()[:8]
        digest = hashlib.sha1(name.encode()).hexdigest()
        self.state.packages[name] = InstalledPackage(
            name, f"/data/app/~~{digest[:22]}==/{name}-{digest[22:]}==/base.apk", ".MainActivity")
        self.state.logd("I", "PackageManager", f"Package {name} installed from {origin}")
        await io.out("Success\n")
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
        """``input tap X Y``, ``input swipe X1 Y1 X2 Y2 [MS]``, ``input keyevent KEY...``, ``input text TEXT``."""
        sub, params = (args[0], args[1:]) if args else ("", [])
        try:
            if sub in INPUT_ARGUMENTS and len(params) in INPUT_ARGUMENTS[sub]:
                values = [float(p) for p in params]
                if sub == "swipe":
                    await asyncio.sleep((values[4] if len(values) == 5 else 300) / 1000)
                end = values[:2] if sub == "tap" else values[2:4]
                self._touched(int(end[0]), int(end[1]))
            elif sub == "keyevent" and params:
                for key in params:
                    self._key(self._keycode(key))
            elif sub != "text" or not params:
                raise ValueError
        except ValueError:
            await io.err(f"Error: Invalid arguments for command: {sub}\n"
                         "Usage: input <command> [<arg>...]\n")
            self.state.logd("W", "Input", f"invalid input command: {' '.join(args)}", pid=5678)
            return 1
        self.state.logd("D", "InputDispatcher", f"input {' '.join(args)[:200]}")
        self.state.inputs += 1  # the screen shows every input (its band changes colour)
        return 0

    def _touched(self, x: int, y: int) -> None:
        width, height = self.state.screen_size
        if 0 <= x < width and 0 <= y < height:
            self.state.last_touch = (x, y)

    def _key(self, code: int) -> None:
        if code == KEYCODES["POWER"]:
            self.state.screen_on = not self.state.screen_on
        elif code == KEYCODES["WAKEUP"]:
            self.state.screen_on = True
        elif code == KEYCODES["SLEEP"]:
            self.state.screen_on = False
        elif code == KEYCODES["MENU"] and self.state.screen_on:
            self.state.screen_locked = False  # dismisses a keyguard without a secure lock
        elif code in (KEYCODES["HOME"], KEYCODES["BACK"]):
            self.state.go_home()
        if not self.state.screen_on:
            self.state.screen_locked = True

    # -- dumpsys, screen and window manager

    async def dumpsys(self, args: list[str], io: CommandIO) -> int:
        """``dumpsys battery``, ``dumpsys power``, ``dumpsys window policy`` (the health probe) and ``dumpsys window``
        (adbutils' app_current)."""
        report = {"battery": self._battery, "power": self._power, "window": self._window}.get(args[0] if args else "")
        if args[:2] == ["window", "policy"]:
            report = self._window_policy
        if report is None:
            await io.err(f"Can't find service: {args[0] if args else ''}\n")
            return 0
        await io.out(report())
        return 0

    def _battery(self) -> str:
        state = self.state
        powered = state.ac_powered or state.usb_powered or state.wireless_powered
        status = 5 if powered and state.battery_level >= 100 else 2 if powered else 3
        return ("Current Battery Service state:\n"
                f"  AC powered: {str(state.ac_powered).lower()}\n"
                f"  USB powered: {str(state.usb_powered).lower()}\n"
                f"  Wireless powered: {str(state.wireless_powered).lower()}\n  Dock powered: false\n"
                "  Max charging current: 500000\n  Max charging voltage: 5000000\n"
                f"  Charge counter: {state.battery_level * 40000}\n"
                f"  status: {status}\n  health: 2\n  present: true\n"
                f"  level: {state.battery_level}\n  scale: 100\n"
                f"  voltage: {3600 + state.battery_level * 6}\n"
                f"  temperature: {state.battery_temperature_tenths}\n  technology: Li-ion\n")

    def _power(self) -> str:
        awake = self.state.screen_on
        return ("POWER MANAGER (dumpsys power)\n\nPower Manager State:\n"
                f"  mWakefulness={'Awake' if awake else 'Asleep'}\n"
                f"  mIsPowered={str(self.state.ac_powered or self.state.usb_powered).lower()}\n"
                f"  mBatteryLevel={self.state.battery_level}\n"
                f"Display Power: state={'ON' if awake else 'OFF'}\n")

    def _window_policy(self) -> str:
        locked = str(self.state.screen_locked).lower()
        return ("WINDOW MANAGER POLICY STATE (dumpsys window policy)\n"
                f"    mShowingDream=false mDreamingLockscreen={locked} mDreamingSleepToken=null\n"
                "    KeyguardServiceDelegate\n"
                f"      showing={locked}\n      showingAndNotOccluded={locked}\n      secure=false\n"
                "      KeyguardStateMonitor\n"
                f"        mIsShowing={locked}\n        mSimSecure=false\n")

    def _window(self) -> str:
        width, height = self.state.display_size
        return ("WINDOW MANAGER WINDOWS (dumpsys window windows)\n"
                f"  mCurrentFocus=Window{{5f3c1a u0 {self.state.foreground}}}\n"
                f"  mFocusedApp=ActivityRecord{{8e21b7 u0 {self.state.foreground} t42}}\n"
                f"  mScreenOn={str(self.state.screen_on).lower()}\n"
                f"  cur={width}x{height} app={width}x{height}\n")

    async def screencap(self, args: list[str], io: CommandIO) -> int:
        """``screencap -p``: a PNG on stdout of the screen as turned (``screen_size``); raw frames and files are not
        supported."""
        if "-p" not in args or any(not a.startswith("-") for a in args):
            raise CommandError("screencap: only `screencap -p` (a PNG on stdout) is supported here")
        await io.out(await self.renderer.png(self.state))
        return 0

    async def settings(self, args: list[str], io: CommandIO) -> int:
        """``settings get|put system user_rotation|accelerometer_rotation [VALUE]`` (what a rotate button uses)."""
        if len(args) >= 3 and args[0] == "get" and args[1] == "system":
            value = {"user_rotation": self.state.rotation, "accelerometer_rotation": 0}.get(args[2])
            await io.out(f"{'null' if value is None else value}\n")
            return 0
        if len(args) == 4 and args[0] == "put" and args[1] == "system" and args[3].isdigit():
            if args[2] == "user_rotation":
                self.state.rotation = int(args[3]) % 4
                self.state.last_touch = None
            return 0
        await io.err("usage: settings get|put system NAME [VALUE]\n")
        return 255

    async def wm(self, args: list[str], io: CommandIO) -> int:
        if args != ["size"]:
            await io.err("Window manager (window) commands: only `wm size` here\n")
            return 255
        width, height = self.state.display_size
        await io.out(f"Physical size: {width}x{height}\n")
        return 0
