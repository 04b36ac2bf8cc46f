"""Virtual phones driven through a real adb server and adbutils, exactly as the agent drives USB phones.

The module starts its own adb server (the binary bundled with adbutils) on a free port, so it never
touches a developer's default server, and kills it at the end.
"""

import asyncio
import contextlib
import hashlib
import io
import re
import shlex
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import adbutils
import pytest
from PIL import Image

from phonefleet.protocol.timeline import find_crashes, parse_line
from phonefleet.virtual import PHONE_MODELS, LocalAdbServer, PhoneState, VirtualFleet, VirtualPhone, VirtualShell
from phonefleet.virtual.commandio import BufferSink, BytesStdin, CommandIO
from tests.conftest import eventually, free_port

T = TypeVar("T")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"





async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """adbutils blocks; the phones live on this loop, so every adbutils call runs in a worker thread."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@pytest.fixture(scope="module")
async def adb_server() -> AsyncIterator[LocalAdbServer]:
    server = LocalAdbServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
async def fleet(adb_server: LocalAdbServer) -> AsyncIterator[VirtualFleet]:
    phones = [
        VirtualPhone("VPHONE0001", model=PHONE_MODELS[0]),
        VirtualPhone("VPHONE0002", model=PHONE_MODELS[1], battery_level=42),
        # the smallest payload adb allows: every reply spans many WRTEs, each waiting for its OKAY
        VirtualPhone("VPHONE0003", model=PHONE_MODELS[2], max_payload=4096),
    ]
    async with VirtualFleet(phones=phones, adb_port=adb_server.port) as running:
        yield running


@pytest.fixture(scope="module")
def adb(adb_server: LocalAdbServer) -> Any:
    return adbutils.AdbClient(host="127.0.0.1", port=adb_server.port)


def _device(adb: Any, phone: VirtualPhone) -> Any:
    return adb.device(phone.adb_serial)


def _fake_apk(package: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("AndroidManifest.xml", f'<manifest package="{package}" android:versionCode="3"/>')
        archive.writestr("classes.dex", b"dex\n035\0" + bytes(20_000))
    return buffer.getvalue()


async def test_phones_are_listed_online_with_their_model(fleet: VirtualFleet, adb: Any) -> None:
    online = {d.serial for d in await blocking(adb.device_list)}
    assert set(fleet.serials) <= online
    infos = {info.serial: info for info in await blocking(adb.list, extended=True)}
    for phone in fleet.phones:
        info = infos[phone.adb_serial]
        assert info.state == "device"
        assert info.tags["model"] == re.sub(r"[^A-Za-z0-9]", "_", phone.model)  # as `adb devices -l` sanitises it
        device = _device(adb, phone)
        assert await blocking(lambda d=device: d.prop.model) == phone.model
        assert await blocking(device.get_state) == "device"


async def test_getprop_reports_the_phone(fleet: VirtualFleet, adb: Any) -> None:
    phone = fleet.phones[1]
    device = _device(adb, phone)
    assert await blocking(device.shell, "getprop ro.build.version.release") == phone.android_version == "13"
    assert await blocking(device.getprop, "ro.serialno") == "VPHONE0002"
    everything = await blocking(device.shell, "getprop")
    assert "[ro.product.manufacturer]: [samsung]" in everything
    battery = await blocking(device.battery)
    assert battery.level == 42
    assert battery.usb_powered is True


async def test_exit_codes_over_legacy_shell_and_shell_v2(fleet: VirtualFleet, adb: Any) -> None:
    device = _device(adb, fleet.phones[0])
    assert (await blocking(device.shell2, "false")).returncode == 1
    assert (await blocking(device.shell2, "true && echo ok")).output == "ok\n"
    missing = await blocking(device.shell2, "no-such-tool --flag")
    assert missing.returncode == 127
    assert "no-such-tool: inaccessible or not found" in missing.output
    v2 = await blocking(device.shell2, "echo out; no-such-tool; exit 3", v2=True)
    assert (v2.returncode, v2.stdout) == (3, "out\n")
    assert "not found" in v2.stderr


async def test_adb_command_line_gets_exit_codes_and_files(
    fleet: VirtualFleet, adb_server: LocalAdbServer, tmp_path: Path
) -> None:
    serial = fleet.phones[0].adb_serial
    assert (await adb_server.run("-s", serial, "shell", "exit 7", check=False)).returncode == 7
    source = tmp_path / "blob.bin"
    source.write_bytes(hashlib.sha256(b"seed").digest() * 40_000)  # 1.28 MB: several sync DATA chunks
    await adb_server.run("-s", serial, "push", str(source), "/sdcard/blob.bin")
    await adb_server.run("-s", serial, "pull", "/sdcard/blob.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


async def test_taps_and_urls_land_in_the_action_log(fleet: VirtualFleet, adb: Any) -> None:
    phone = fleet.phones[0]
    device = _device(adb, phone)
    start = len(phone.actions)
    await blocking(device.click, 100, 200)
    await blocking(device.shell, "am start -a android.intent.action.VIEW -d https://example.com")
    tap = await phone.actions.wait_for(lambda r: r.argv[:2] == ("input", "tap"), timeout=5, since=start)
    assert tap.command == "input tap 100 200"
    assert tap.service == "shell"
    view = await phone.actions.wait_for(lambda r: "https://example.com" in r.argv, timeout=5, since=start)
    assert view.argv[:3] == ("am", "start", "-a")
    assert phone.state.current_url == "https://example.com"
    assert (await blocking(device.app_current)).package == "com.android.chrome"


async def test_screenshots_are_valid_pngs(fleet: VirtualFleet, adb: Any) -> None:
    for phone in (fleet.phones[0], fleet.phones[2]):  # default payload, and 4 KiB WRTEs
        device = _device(adb, phone)
        data = await blocking(device.shell, "screencap -p", encoding=None)
        assert data.startswith(PNG_SIGNATURE)
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes every row and checks the zlib stream
        assert image.size == (1080, 2400)
    picture = await blocking(_device(adb, fleet.phones[2]).screenshot, error_ok=False)
    assert picture.size == (1080, 2400)


async def test_push_then_install(fleet: VirtualFleet, adb: Any, tmp_path: Path) -> None:
    phone = fleet.phones[2]
    device = _device(adb, phone)
    pushed = await blocking(device.sync.push, b"hello phone\n", "/data/local/tmp/hello.txt")
    assert pushed == 12
    assert await blocking(device.sync.read_bytes, "/data/local/tmp/hello.txt") == b"hello phone\n"
    assert (await blocking(device.sync.stat, "/data/local/tmp/hello.txt")).size == 12
    apk = tmp_path / "demo.apk"
    apk.write_bytes(_fake_apk("com.example.demo"))
    await blocking(device.install, str(apk), nolaunch=True, silent=True)
    assert "com.example.demo" in await blocking(device.list_packages)
    assert any(r.argv[:2] == ("pm", "install") for r in phone.actions.records)
    assert not phone.state.files.is_file("/data/local/tmp/unknown.apk")  # adbutils removes its upload


async def test_track_devices_sees_a_phone_go_offline_and_come_back(
    fleet: VirtualFleet, adb_server: LocalAdbServer
) -> None:
    phone = fleet.phones[1]
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    tracker = adbutils.AdbClient(host="127.0.0.1", port=adb_server.port)

    def follow() -> None:  # adbutils' tracker is a blocking generator; it ends when the module kills the server
        with contextlib.suppress(Exception):
            for event in tracker.track_devices():
                loop.call_soon_threadsafe(events.put_nowait, (event.serial, event.status))

    threading.Thread(target=follow, name="track-devices", daemon=True).start()

    async def until(status: str) -> None:
        async with asyncio.timeout(15):
            while (await events.get()) != (phone.adb_serial, status):
                pass

    await until("device")
    await phone.go_offline()
    await until("offline")
    await phone.come_back()
    await until("device")
    assert await blocking(_device(_client(adb_server), phone).shell, "echo back") == "back"


def _client(server: LocalAdbServer) -> Any:
    return adbutils.AdbClient(host="127.0.0.1", port=server.port)


async def test_reboot_drops_off_and_comes_back(fleet: VirtualFleet, adb: Any) -> None:
    phone = fleet.phones[0]
    phone.boot_time = 0.1  # back before the adb server's first reconnect attempt (250 ms after the drop)
    phone.screen_on = False
    handshakes = phone.handshakes
    await blocking(_device(adb, phone).reboot)

    async def rebooted() -> bool:
        return phone.handshakes > handshakes

    await eventually(rebooted)
    await fleet.wait_for_state(phone, "device")
    assert phone.screen_on

    async def booted() -> bool:  # adb answers before the boot completes (boot_settle_sec)
        return bool(await blocking(_device(adb, phone).shell, "getprop sys.boot_completed") == "1")

    await eventually(booted)


async def test_hundred_sequential_shell_calls(fleet: VirtualFleet, adb: Any) -> None:
    """Each call answers, in order; how fast is a benchmark's figure (``python -m bench.virtual_shell``)."""
    device = _device(adb, fleet.phones[0])
    async with asyncio.timeout(90):  # generous: a stuck call fails here rather than at the suite's timeout
        outputs = await blocking(lambda: [device.shell(f"echo hi {i}") for i in range(100)])
    assert outputs == [f"hi {i}" for i in range(100)]


# ------------------------------------------------------------------ the fake sh on its own, without adb


async def _sh(line: str, state: PhoneState | None = None) -> tuple[int, str, str]:
    phone_state = state or VirtualPhone().state
    out, err = BufferSink(), BufferSink()
    status = await VirtualShell(phone_state, "shell").run(line, CommandIO(BytesStdin(), out, err))
    return status, out.data.decode(), err.data.decode()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("echo a; false; echo $?", (0, "a\n1\n", "")),
        ("false && echo no || echo yes", (0, "yes\n", "")),
        ("true || echo no && echo yes", (0, "yes\n", "")),
        ("echo 'single $?' \"double $?\"", (0, "single $? double 0\n", "")),
        ("getprop | grep -c ro.product.model", (0, "1\n", "")),
        (
            "echo hi > /sdcard/a.txt && cat /sdcard/a.txt /sdcard/missing 2>&1",
            (1, "hi\ncat: /sdcard/missing: No such file or directory\n", ""),
        ),
        ("cd /data/local/tmp && pwd", (0, "/data/local/tmp\n", "")),
        ("echo x > /system/x", (1, "", "/system/bin/sh: can't create /system/x: Permission denied\n")),
        ("nope 2>/dev/null; echo $?", (0, "127\n", "")),
        ("sh -c 'exit 4'; echo $?", (0, "4\n", "")),
        ("echo 'unterminated", (1, "", "/system/bin/sh: syntax error: unterminated quoted string\n")),
        ("wm size", (0, "Physical size: 1080x2400\n", "")),
        ("echo 'a;b' \"c|d\" e\\&\\&f '$HOME'", (0, "a;b c|d e&&f $HOME\n", "")),
        ("echo $HOME; echo x | (cat)", (1, "", "/system/bin/sh: syntax error: '(' unexpected\n")),
        ("echo a &&", (1, "", "/system/bin/sh: syntax error: newline unexpected\n")),
    ],
)
async def test_fake_shell(line: str, expected: tuple[int, str, str]) -> None:
    assert await _sh(line) == expected


async def test_fake_shell_android_tools_change_state() -> None:
    state = VirtualPhone().state
    assert (await _sh("input keyevent KEYCODE_POWER", state))[0] == 0
    assert not state.screen_on
    assert "mWakefulness=Asleep" in (await _sh("dumpsys power", state))[1]
    assert (await _sh("input keyevent WAKEUP; am start -n com.android.settings/.Settings", state))[0] == 0
    assert state.screen_on and state.foreground == "com.android.settings/com.android.settings.Settings"
    assert (await _sh("am force-stop com.android.settings", state))[0] == 0
    assert state.foreground_package == "com.google.android.apps.nexuslauncher"
    assert (await _sh("monkey -p com.nope -c android.intent.category.LAUNCHER 1", state))[0] != 0
    status, out, _ = await _sh("am instrument -w com.android.settings/androidx.test.runner.AndroidJUnitRunner", state)
    assert (status, out.strip().endswith("OK (3 tests)")) == (0, True)
    assert (await _sh("input tap 1", state))[0] == 1
    assert [r.command for r in state.actions.records][-1] == "input tap 1"


async def test_fake_shell_keeps_quoted_text_whole_and_opens_a_url_in_the_named_browser() -> None:
    state = VirtualPhone().state
    text = "it's; a | test && more"
    assert (await _sh(f"input text {shlex.quote(text)}", state))[0] == 0
    assert state.actions.records[-1].argv == ("input", "text", text)
    line = "am start -a android.intent.action.VIEW -d 'https://example.com/?a=1&b=2' com.android.chrome"
    assert (await _sh(line, state))[0] == 0
    assert state.current_url == "https://example.com/?a=1&b=2" and state.foreground_package == "com.android.chrome"
    assert (await _sh("am start -a android.intent.action.VIEW -d https://example.com/ com.nope.browser", state))[0] \
        == 255


async def test_fake_logcat_prints_what_the_phone_did_by_its_own_clock() -> None:
    state = VirtualPhone().state
    state.clock_offset_sec = 3600.0  # the phone's clock runs an hour ahead of this host's
    status, out, _ = await _sh("date +%s.%N", state)
    phone_now = float(out)
    assert status == 0 and abs(phone_now - (time.time() + 3600)) < 5
    assert (await _sh("am start -n com.android.settings/.Settings", state))[0] == 0
    status, out, _ = await _sh("logcat -d -v threadtime", state)
    lines = [parse_line(line) for line in out.splitlines()]
    parsed = [line for line in lines if line is not None]
    assert status == 0 and out.startswith("--------- beginning of main")
    assert any(p.tag == "ActivityManager" and "com.android.settings" in p.message for p in parsed)
    stamp = datetime.fromtimestamp(phone_now, UTC).strftime("%m-%d %H:%M")
    assert parsed[0].at.startswith(stamp[:8])  # by the phone's clock (the date and hour)
    # -T: only what came after; -t N: the last N; -c: cleared
    since = f"{phone_now + 0.5:.3f}"  # nothing was logged after this
    assert (await _sh(f"logcat -d -v threadtime -T '{since}'", state))[1] == "--------- beginning of main\n"
    earlier = datetime.fromtimestamp(phone_now - 60, UTC).strftime("%m-%d %H:%M:%S.000")
    assert len((await _sh(f"logcat -d -v threadtime -T '{earlier}'", state))[1].splitlines()) == len(out.splitlines())
    assert len((await _sh("logcat -d -t 2", state))[1].splitlines()) == 3
    assert (await _sh("logcat -c; logcat -d", state))[1] == "--------- beginning of main\n"
    assert (await _sh("logcat -v brief", state))[0] == 1


async def test_fake_logcat_shows_crashes_and_anrs_of_the_packages_set_to_fail() -> None:
    state = VirtualPhone().state
    state.crashing_packages.add("com.android.settings")
    state.anr_packages.add("com.android.vending")
    assert (await _sh("monkey -p com.android.settings -c android.intent.category.LAUNCHER 1", state))[0] == 0
    assert state.foreground_package == "com.google.android.apps.nexuslauncher"  # it crashed: back home
    assert (await _sh("am start -n com.android.vending/com.android.vending.AssetBrowserActivity", state))[0] == 0
    out = (await _sh("logcat -d -v threadtime", state))[1]
    crashes = find_crashes(out.splitlines())
    assert [c.process for c in crashes] == ["com.android.settings", "com.android.vending"]
    assert "FATAL EXCEPTION" in crashes[0].line and "ANR in com.android.vending" in crashes[1].line
    fatal = [p for p in map(parse_line, out.splitlines()) if p is not None and p.level == "E"]
    assert fatal and fatal[0].tag == "AndroidRuntime"
