"""Plan steps' commands reach the phone through the adb server's protocol on the event loop (``AdbPhone`` on
``AdbHost``): exit codes from the shell protocol (or printed, for a phone without it), binary output untouched,
a timeout or a vanished phone an ``AdbHostError`` and never a bare ``TimeoutError``, a cancel that closes the
connection, and a bound on the connections open at once."""

import asyncio
from collections.abc import Awaitable, Callable

import adbutils
import pytest

from phonefleet.agent.adbhost import AdbHost, AdbHostError
from phonefleet.agent.phone import AdbPhone
from phonefleet.virtual import VirtualPhone
from tests.conftest import eventually
from tests.health_fixtures import FleetFactory

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def phone_of(adb_server: int, phone: VirtualPhone, host: AdbHost | None = None) -> AdbPhone:
    client = adbutils.AdbClient(host="127.0.0.1", port=adb_server)
    return AdbPhone(client.device(phone.adb_serial), host or AdbHost("127.0.0.1", adb_server))


def running_services(phone: VirtualPhone) -> int:
    """Services the virtual phone's adbd is serving now (a hung shell counts until its connection closes)."""
    return sum(len(session._tasks) for session in phone._sessions)


def services_running(phone: VirtualPhone, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return running_services(phone) == count

    return check


async def test_a_command_gives_its_exit_code_and_output(fleet_factory: FleetFactory, adb_server: int) -> None:
    fleet = await fleet_factory(1)
    phone = phone_of(adb_server, fleet.phones[0])
    assert "shell_v2" in await phone.host.features(phone.serial)
    assert await phone.shell("echo one; echo two; false") == (1, "one\ntwo\n")
    assert await phone.shell("getprop ro.product.model") == (0, fleet.phones[0].model + "\n")
    code, output = await phone.shell("input nonsense")
    assert code != 0 and output, (code, output)  # what went to stderr is in the output too


async def test_a_phone_without_the_shell_protocol_still_gives_exit_codes(
        fleet_factory: FleetFactory, adb_server: int) -> None:
    old = VirtualPhone("VPHONEOLD1", features=("stat_v2",))
    fleet = await fleet_factory(phones=[old])
    phone = phone_of(adb_server, fleet.phones[0])
    assert "shell_v2" not in await phone.host.features(phone.serial)
    assert await phone.shell("echo one; false") == (1, "one\n")
    assert await phone.shell("true") == (0, "")


async def test_exec_out_gives_a_screencap_byte_for_byte(fleet_factory: FleetFactory, adb_server: int) -> None:
    fleet = await fleet_factory(1)
    png = await phone_of(adb_server, fleet.phones[0]).shell_bytes("screencap -p", timeout=30)
    assert png.startswith(PNG_SIGNATURE)  # "\r\n" and "\n" untouched: no pty, no line-ending translation
    assert png.endswith(b"IEND\xaeB`\x82"), png[-12:]


async def test_a_command_past_its_timeout_is_an_adb_error_and_closes_its_connection(
        fleet_factory: FleetFactory, adb_server: int) -> None:
    fleet = await fleet_factory(1)
    virtual = fleet.phones[0]
    phone = phone_of(adb_server, virtual)
    await phone.host.features(phone.serial)  # asked before the phone hangs (adbd answers it, not the shell)
    await virtual.set_fault("hang")
    with pytest.raises(AdbHostError, match=r"did not end within 0\.3 s"):
        await phone.shell("input tap 1 1", timeout=0.3)
    with pytest.raises(AdbHostError, match=r"did not end within 0\.3 s"):
        await phone.shell_bytes("screencap -p", timeout=0.3)
    await eventually(services_running(virtual, 0), timeout=10)
    await virtual.set_fault("none")
    assert await phone.shell("true", timeout=10) == (0, "")


async def test_a_cancelled_command_closes_its_connection(fleet_factory: FleetFactory, adb_server: int) -> None:
    fleet = await fleet_factory(1)
    virtual = fleet.phones[0]
    phone = phone_of(adb_server, virtual)
    await phone.host.features(phone.serial)
    await virtual.set_fault("hang")
    task = asyncio.create_task(phone.shell("input tap 1 1"))
    await eventually(services_running(virtual, 1), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    await eventually(services_running(virtual, 0), timeout=10)  # the phone ended it


async def test_a_phone_going_away_mid_command_is_an_adb_error(fleet_factory: FleetFactory, adb_server: int) -> None:
    fleet = await fleet_factory(1)
    virtual = fleet.phones[0]
    phone = phone_of(adb_server, virtual)
    await phone.host.features(phone.serial)
    await virtual.set_fault("hang")
    task = asyncio.create_task(phone.shell("input tap 1 1", timeout=60))
    await eventually(services_running(virtual, 1), timeout=10)
    await virtual.go_offline()
    with pytest.raises(AdbHostError):
        await asyncio.wait_for(task, 30)
    with pytest.raises(AdbHostError):  # and the next command is refused by the adb server
        await phone.shell("true", timeout=30)


async def test_connections_to_the_adb_server_are_bounded(fleet_factory: FleetFactory, adb_server: int) -> None:
    fleet = await fleet_factory(1)
    virtual = fleet.phones[0]
    host = AdbHost("127.0.0.1", adb_server, max_connections=2)
    phone = phone_of(adb_server, virtual, host)
    await host.features(phone.serial)
    await virtual.set_fault("hang")
    tasks = [asyncio.create_task(phone.shell("input tap 1 1")) for _ in range(3)]
    await eventually(services_running(virtual, 2), timeout=10)
    assert not any(t.done() for t in tasks)
    await virtual.set_fault("none")  # the two hung commands stay hung; the third has not reached the phone
    tasks[0].cancel()  # a share freed: the third gets its connection, and the phone answers it
    assert await asyncio.wait_for(tasks[2], 10) == (0, "")
    tasks[1].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_refusal_by_the_adb_server_is_an_adb_error_with_its_reason(
        fleet_factory: FleetFactory, adb_server: int) -> None:
    fleet = await fleet_factory(1)
    host = AdbHost("127.0.0.1", adb_server)
    with pytest.raises(AdbHostError, match="not found"):
        await host.run("NO-SUCH-PHONE", "true")
    serial = fleet.phones[0].adb_serial
    with pytest.raises(AdbHostError, match="more than 100 bytes of output"):
        await host.run(serial, "screencap -p", limit=100)
    assert await host.run(serial, "echo ok; exit 3") == (3, b"ok\n")  # the connection bound is given back
