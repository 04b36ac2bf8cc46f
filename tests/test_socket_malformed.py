"""Malformed Socket.IO packets (invalid JSON such as NaN, an event that is not an array): an error ack
when the packet asked for one, one WARNING without a traceback, and the connection and the process
carry on. Sent by hand over a raw WebSocket to an in-process server, on both namespaces."""

import logging

import pytest

from phonefleet.protocol import events as ev
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job
from tests.raw_socketio import RawSocketIO

MALFORMED = [
    '["agent:heartbeat",{"x":NaN}]',  # NaN is not JSON
    '["agent:heartbeat",NaN]',
    '["agent:heartbeat",{"running":[1,',  # cut off
    '{"not":"an event array"}',  # JSON, but not [name, ...]
    "[]",
    "[42]",  # an event name must be a string
]


def warnings_from(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


async def send_malformed_and_check(raw: RawSocketIO, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    for ack_id, payload in enumerate(MALFORMED, start=1):
        caplog.clear()
        await raw.send(f"2{namespace},{ack_id}{payload}")
        ack = await raw.ack(namespace, ack_id)
        assert ack["ok"] is False, ack
        assert ack["error"]["code"] == "malformed_packet", ack
        assert isinstance(ack["error"]["message"], str) and ack["error"]["message"], ack
        assert ack["error"]["details"] and ack["error"]["details"][0]["field"] == "packet", ack
        records = warnings_from(caplog)
        assert [(r.levelname, r.getMessage()) for r in records] == [("WARNING", "malformed socket packet")], payload
        assert records[0].exc_info is None and records[0].exc_text is None, "no traceback"


async def test_malformed_packets_on_agent_namespace_get_an_error_ack_and_one_warning(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    token = await server.add_agent("raw")
    caplog.set_level(logging.WARNING)
    async with RawSocketIO(server.url) as raw:
        await raw.connect(ev.AGENT_NAMESPACE, {"token": token})
        await send_malformed_and_check(raw, ev.AGENT_NAMESPACE, caplog)
        caplog.clear()
        beat = await raw.call(ev.AGENT_NAMESPACE, 100, ev.AGENT_HEARTBEAT, {"running": []})
        assert beat["ok"] is True, beat  # the same connection still works
        ping = await raw.call(ev.AGENT_NAMESPACE, 101, ev.AGENT_PING, {})
        assert ping == {"ok": True}
    assert not warnings_from(caplog)


async def test_malformed_packets_on_dashboard_namespace_get_an_error_ack_and_one_warning(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with RawSocketIO(server.url) as raw:
        await raw.connect(ev.DASHBOARD_NAMESPACE, {"token": ADMIN})
        await send_malformed_and_check(raw, ev.DASHBOARD_NAMESPACE, caplog)
        caplog.clear()
        answer = await raw.call(ev.DASHBOARD_NAMESPACE, 100, "hello", {})
        assert answer["error"]["code"] == "unknown_event", answer  # still read and answered
        await server.ok("POST", "/api/jobs", open_url_job(target_type="device_count", target_value=1))
        name, _ = await raw.event(ev.DASHBOARD_NAMESPACE, (ev.JOB_STATUS_UPDATE, ev.JOB_PROGRESS))
        assert name in (ev.JOB_STATUS_UPDATE, ev.JOB_PROGRESS)  # and still pushed to
    assert not warnings_from(caplog)


async def test_malformed_packet_without_ack_id_is_logged_once_and_dropped(
        server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    token = await server.add_agent("raw")
    caplog.set_level(logging.WARNING)
    async with RawSocketIO(server.url) as raw:
        await raw.connect(ev.AGENT_NAMESPACE, {"token": token})
        await raw.send(f'2{ev.AGENT_NAMESPACE},["agent:heartbeat",{{"x":NaN}}]')

        async def logged() -> list[logging.LogRecord]:
            return warnings_from(caplog)

        records = await eventually(logged, timeout=10)
        beat = await raw.call(ev.AGENT_NAMESPACE, 7, ev.AGENT_HEARTBEAT, {"running": []})
        assert beat["ok"] is True, beat
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in warnings_from(caplog)] == [
        ("WARNING", "malformed socket packet", None)]
    assert records[0].exc_text is None


@pytest.mark.parametrize("namespace", [ev.AGENT_NAMESPACE, ev.DASHBOARD_NAMESPACE])
async def test_a_binary_event_with_nothing_attached_is_answered_as_a_plain_one(
        server: RunningServer, namespace: str) -> None:
    """``5`` with 0 attachments: python-socketio would hold it for an attachment that never comes (no answer, and
    the connection's next message taken for its bytes). It is read as the plain event it is."""
    auth = {"token": await server.add_agent("raw")} if namespace == ev.AGENT_NAMESPACE else {"token": ADMIN}
    ping = ev.AGENT_PING if namespace == ev.AGENT_NAMESPACE else ev.DASHBOARD_PING
    async with RawSocketIO(server.url) as raw:
        await raw.connect(namespace, auth)
        await raw.send(f'50-{namespace},1["{ping}",{{}}]')
        assert await raw.ack(namespace, 1) == {"ok": True}
        await raw.send(f'50-{namespace},2["screen:frame",{{"serial":"x"}}]')  # a frame without its bytes
        refused = await raw.ack(namespace, 2)
        assert refused["ok"] is False and refused["error"]["code"], refused
        assert await raw.call(namespace, 3, ping, {}) == {"ok": True}  # the next message is a message
