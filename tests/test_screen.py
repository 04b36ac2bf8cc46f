"""The live screen and remote control, end to end: real server, real agent, virtual phones on the real adb
server, and a dashboard client that watches as the browser does."""

import io
from typing import Any

from PIL import Image

from phonefleet.agent.agent import Agent
from phonefleet.sim.screen_viewer import ScreenViewer
from phonefleet.virtual.phone import VirtualPhone
from tests.agent_fixtures import AgentFactory
from tests.conftest import ADMIN, RunningServer, eventually

pytest_plugins = ["tests.agent_fixtures"]


async def one_phone(server: RunningServer, agent_factory: AgentFactory, name: str = "pc") -> tuple[Agent, VirtualPhone,
                                                                                                    int]:
    agent = await agent_factory(name, virtual=1)
    assert agent.fleet is not None
    phone = agent.fleet.phones[0]
    devices = await server.ok("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial"] == phone.adb_serial)
    return agent, phone, device_id


async def viewer(server: RunningServer, **kwargs: Any) -> ScreenViewer:
    v = ScreenViewer(server.url, ADMIN, **kwargs)
    await v.connect()
    return v


def picture(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


async def screen_image(server: RunningServer, device_id: int, query: str = "") -> tuple[str, Image.Image]:
    async with server.session.get(f"{server.url}/api/devices/{device_id}/screen{query}",
                                  headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200, await r.text()
        return r.content_type, picture(await r.read())


async def device(server: RunningServer, device_id: int) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in await server.ok("GET", "/api/devices") if d["id"] == device_id)
    return found


async def timeline(server: RunningServer, device_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await server.ok("GET", f"/api/devices/{device_id}/events"))["items"]
    return items


def screencaps(phone: VirtualPhone, since: int = 0) -> int:
    return sum(1 for r in phone.actions.records[max(0, since - (len(phone.actions) - len(phone.actions.records))):]
               if r.argv[:1] == ("screencap",))


async def test_frames_flow_only_while_watched_and_only_when_the_picture_changes(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    agent, phone, device_id = await one_phone(server, agent_factory)
    v = await viewer(server)
    ack = await v.watch(device_id, max_width=360)
    assert ack["ok"] and ack["data"]["watchers"] == 1, ack
    await v.wait_for(lambda: len(v.of(device_id)) == 1)
    first = v.frames[0]
    assert first.meta["phone_width"] == 1080 and first.meta["phone_height"] == 2400
    assert first.meta["width"] == 360 and first.meta["serial"] == phone.adb_serial
    image = picture(first.data)
    assert image.format == "JPEG" and image.size == (360, 800)

    # The screen does not change: the agent keeps capturing, and sends nothing new.
    assert agent.screens is not None
    stream = agent.screens.streams[phone.adb_serial]
    seen = stream.captures
    await eventually(lambda: _async(stream.captures >= seen + 3))
    assert len(v.of(device_id)) == 1

    # A tap changes the picture: a new frame, with the tap's mark on it.
    phone.state.last_touch, phone.state.inputs = (540, 1200), 1
    await v.wait_for(lambda: len(v.of(device_id)) == 2)
    assert v.frames[1].meta["seq"] > first.meta["seq"]
    assert picture(v.frames[1].data).getpixel((180, 400)) != image.getpixel((180, 400))

    # Nobody watches: the stream stops; only a snapshot asked for captures the screen after that.
    assert (await v.unwatch(device_id))["ok"]
    await eventually(lambda: _async(phone.adb_serial not in agent.screens.streams))  # type: ignore[union-attr]
    mark = len(phone.actions)
    await screen_image(server, device_id)
    assert screencaps(phone, mark) == 1
    assert len(v.of(device_id)) == 2
    await v.disconnect()


async def _async(value: bool) -> bool:
    return value


async def test_screen_endpoint_answers_a_current_frame(server: RunningServer, agent_factory: AgentFactory) -> None:
    agent, _phone, device_id = await one_phone(server, agent_factory)
    async with server.session.get(f"{server.url}/api/devices/{device_id}/screen",
                                  headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200 and r.content_type == "image/jpeg"
        assert r.headers["X-Phone-Width"] == "1080"
        assert picture(await r.read()).size == (1080, 2400)
    async with server.session.get(f"{server.url}/api/devices/{device_id}/screen?max_width=120",
                                  headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200 and picture(await r.read()).size == (120, 267)
    async with server.session.get(f"{server.url}/api/devices/{device_id}/screen?format=png",
                                  headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 200 and r.content_type == "image/png"
        image = picture(await r.read())
        assert image.format == "PNG" and image.size == (1080, 2400)

    status, body = await server.request("GET", f"/api/devices/{device_id}/screen?max_width=3")
    assert status == 422 and body["error"]["details"][0]["field"] == "max_width"
    status, body = await server.request("GET", "/api/devices/999999/screen")
    assert status == 404, body

    await agent.stop()
    await eventually(lambda: _state_is(server, device_id, "offline"))
    status, body = await server.request("GET", f"/api/devices/{device_id}/screen")
    assert status == 409 and body["error"]["code"] == "phone_unavailable", body


async def _state_is(server: RunningServer, device_id: int, state: str) -> bool:
    return bool((await device(server, device_id))["state"] == state)


async def test_rest_input_takes_control_reaches_the_phone_and_is_exclusive(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    _agent, phone, device_id = await one_phone(server, agent_factory)
    mark = len(phone.actions)
    accepted = await server.ok("POST", f"/api/devices/{device_id}/input", {"type": "tap", "x": 540, "y": 1200},
                               expect=200)
    assert accepted["controller"] == "env" and accepted["input"] == {"type": "tap", "x": 540, "y": 1200}
    await phone.actions.wait_for(lambda r: r.command == "input tap 540 1200", since=mark)
    await server.ok("POST", f"/api/devices/{device_id}/input", {"type": "swipe", "x1": 100, "y1": 2000, "x2": 100,
                                                               "y2": 500, "duration_ms": 50}, expect=200)
    await server.ok("POST", f"/api/devices/{device_id}/input", {"type": "text", "text": "hello world"}, expect=200)
    await server.ok("POST", f"/api/devices/{device_id}/input", {"type": "keyevent", "key": "BACK"}, expect=200)
    await server.ok("POST", f"/api/devices/{device_id}/input", {"type": "rotate"}, expect=200)
    commands = phone.actions.commands()
    for expected in ("input swipe 100 2000 100 500 50", "input text hello%sworld", "input keyevent BACK",
                     "settings put system user_rotation 1"):
        assert expected in commands, (expected, commands[-8:])
    assert phone.state.rotation == 1

    # Control took the phone out of distribution, with the reason.
    now = await device(server, device_id)
    assert now["state"] == "paused" and now["paused_by"] == "control" and now["pause_reason"] == "in use by env"

    # Someone else is refused, clearly: another admin by REST, a dashboard by socket.
    other = (await server.ok("POST", "/api/admins", {"name": "alice"}))["token"]
    status, body = await server.request("POST", f"/api/devices/{device_id}/input", token=other,
                                        json={"type": "tap", "x": 1, "y": 1})
    assert status == 409 and "controlled by env" in body["error"]["message"], body
    v = ScreenViewer(server.url, other)
    await v.connect()
    refused = await v.control(device_id, True)
    assert not refused["ok"] and refused["error"]["code"] == "conflict" and "env" in refused["error"]["message"]
    watched = await v.watch(device_id)
    assert watched["ok"] and watched["data"]["controller"] == "env" and not watched["data"]["you_control"]

    released = await server.ok("DELETE", f"/api/devices/{device_id}/control")
    assert released["controller"] is None
    await eventually(lambda: _state_is(server, device_id, "idle"))
    kinds = [(e["kind"], e["actor"]) for e in await timeline(server, device_id)]
    assert ("control_started", "env") in kinds and ("control_ended", "env") in kinds
    taken = await v.control(device_id, True)
    assert taken["ok"] and taken["data"]["you_control"] and taken["data"]["controller"] == "alice"
    await v.disconnect()


async def test_bad_input_is_422_naming_the_field_and_agents_may_not_control(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    _agent, phone, device_id = await one_phone(server, agent_factory)
    mark = len(phone.actions)
    for body, field in [({"type": "tap", "x": 5}, "y"), ({"type": "tap", "x": -1, "y": 5}, "x"),
                        ({"type": "swipe", "x1": 1, "y1": 2, "x2": 3, "y2": "far"}, "y2"),
                        ({"type": "text", "text": ""}, "text"), ({"type": "keyevent", "key": "BACK; reboot"}, "key"),
                        ({"type": "pinch"}, "type"), ({"x": 1, "y": 2}, "type")]:
        status, answer = await server.request("POST", f"/api/devices/{device_id}/input", json=body)
        assert status == 422, (body, answer)
        assert answer["error"]["details"][0]["field"] == field, (body, answer)
    token = await server.add_agent("intruder")
    status, answer = await server.request("POST", f"/api/devices/{device_id}/input", token=token,
                                          json={"type": "tap", "x": 1, "y": 1})
    assert status == 403, answer
    assert not any(r.argv[:1] == ("input",) for r in phone.actions.records[mark:])
    assert (await device(server, device_id))["state"] == "idle"


async def test_dashboard_control_is_given_back_when_the_page_closes(
        server: RunningServer, agent_factory: AgentFactory) -> None:
    _agent, phone, device_id = await one_phone(server, agent_factory)
    v = await viewer(server)
    assert (await v.watch(device_id))["ok"]
    await v.wait_for(lambda: len(v.of(device_id)) >= 1)
    refused = await v.input(device_id, {"type": "tap", "x": 10, "y": 10})
    assert not refused["ok"] and "take control" in refused["error"]["message"]
    taken = await v.control(device_id, True)
    assert taken["ok"] and taken["data"]["you_control"], taken
    await eventually(lambda: _state_is(server, device_id, "paused"))
    frames = len(v.of(device_id))
    assert (await v.input(device_id, {"type": "tap", "x": 300, "y": 900}))["ok"]
    await phone.actions.wait_for(lambda r: r.command == "input tap 300 900")
    await v.wait_for(lambda: len(v.of(device_id)) > frames)  # the tap shows
    bad = await v.input(device_id, {"type": "tap", "x": "left", "y": 900})
    assert not bad["ok"] and bad["error"]["details"][0]["field"].endswith("x")

    await v.disconnect()
    await eventually(lambda: _state_is(server, device_id, "idle"))
    ended = [e for e in await timeline(server, device_id) if e["kind"] == "control_ended"]
    assert ended and ended[0]["reason"] == "the page closed"


async def test_control_ends_after_the_idle_timeout(server_factory: Any, adb_server: int, tmp_path: Any) -> None:
    from phonefleet.agent.agent import Agent as RealAgent
    from phonefleet.agent.config import AgentSettings

    srv = await server_factory(screen_control_idle_sec=0.5)
    token = await srv.add_agent("pc")
    agent = RealAgent(AgentSettings(server=srv.url, token=token, state_dir=tmp_path / "pc", virtual=1,
                                    adb_port=adb_server, probe_sec=0.5))
    await agent.start()
    try:
        assert agent.fleet is not None
        serial = agent.fleet.phones[0].adb_serial

        async def device_id() -> int:
            return next((int(d["id"]) for d in await srv.ok("GET", "/api/devices")
                         if d["serial"] == serial and d["state"] == "idle"), 0)

        found: int = await eventually(device_id, timeout=30)
        await srv.ok("POST", f"/api/devices/{found}/input", {"type": "keyevent", "key": "WAKEUP"}, expect=200)
        assert (await device(srv, found))["state"] == "paused"
        await eventually(lambda: _state_is(srv, found, "idle"))
        ended = [e for e in await timeline(srv, found) if e["kind"] == "control_ended"]
        assert ended and ended[0]["reason"].startswith("no input for 0.5")
    finally:
        await agent.stop()


async def test_a_slow_viewer_gets_the_latest_frames_not_a_queue(server: RunningServer,
                                                               agent_factory: AgentFactory) -> None:
    _agent, phone, device_id = await one_phone(server, agent_factory)
    phone.state.animate = True  # every capture is a new picture
    fast = await viewer(server)
    slow = await viewer(server, ack_delay_sec=1.0)
    assert (await fast.watch(device_id))["ok"] and (await slow.watch(device_id))["ok"]
    await fast.wait_for(lambda: len(fast.of(device_id)) >= 15, timeout=30)
    await slow.wait_for(lambda: len(slow.of(device_id)) >= 2, timeout=30)
    got = [f.meta["seq"] for f in slow.of(device_id)]
    assert len(got) < len(fast.of(device_id)) / 2, (got, len(fast.of(device_id)))
    # It skipped frames (each one it got was the newest when it was ready), rather than falling behind a queue.
    assert got[-1] - got[0] > len(got) - 1, got
    await fast.disconnect()
    await slow.disconnect()
