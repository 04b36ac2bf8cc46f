"""The Socket.IO namespaces: ``/agent`` (one connection per PC agent) and ``/dashboard`` (browsers).

Handlers only authenticate, parse and call a service: an agent's events go to ``AgentEvents.handle``,
whose ack is the answer, its screen frames to the ``ScreenRelay``; dashboards listen, and send only the live
screen's events (watch, control, input), which go to the ``ScreenRelay`` too.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol
from urllib.parse import urlsplit

import socketio

from phonefleet.protocol import events as ev
from phonefleet.protocol import screen as sc
from phonefleet.protocol.models import ErrorBody, ErrorDetail, ErrorInfo
from phonefleet.protocol.wire import MALFORMED_EVENT, MalformedPacket
from phonefleet.server import audit, outage
from phonefleet.server.auth import SESSION_COOKIE, Principal, TokenCheck
from phonefleet.server.metrics import Metrics
from phonefleet.server.outage import OUTAGE_ERRORS
from phonefleet.server.presence import Presence
from phonefleet.server.rooms import Rooms

log = logging.getLogger(__name__)

AgentEventHandler = Callable[[Principal, str, Any], Awaitable[dict[str, Any]]]


class ScreenHandlers(Protocol):
    """What the namespaces hand the live screen (``server.screen_relay.ScreenRelay``)."""

    async def on_frame(self, agent: Principal, meta: Any, data: Any) -> dict[str, Any]: ...

    async def agent_greeted(self, agent_id: int) -> None: ...

    async def on_dashboard(self, sid: str, principal: Principal, event: str, data: Any) -> dict[str, Any]: ...

    async def dashboard_gone(self, sid: str) -> None: ...


def _token_from(auth: Any) -> str | None:
    if isinstance(auth, dict):
        token = auth.get("token")
        return token if isinstance(token, str) else None
    return None


def _features_from(auth: Any) -> frozenset[str]:
    """The features an agent named at connect (``auth["features"]``); anything malformed names none."""
    features = auth.get("features") if isinstance(auth, dict) else None
    if not isinstance(features, list) or len(features) > 50:
        return frozenset()
    return frozenset(f for f in features if isinstance(f, str))


def _same_origin(environ: Any) -> bool:
    """The handshake comes from a page of this server (or from no page: a non-browser client sends no Origin)."""
    if not isinstance(environ, dict):
        return False
    origin = str(environ.get("HTTP_ORIGIN", ""))
    if not origin:
        return True
    host = str(environ.get("HTTP_X_FORWARDED_HOST") or environ.get("HTTP_HOST", "")).split(",")[0].strip()
    return urlsplit(origin).netloc.lower() == host.lower()


def _session_cookie(environ: Any) -> str | None:
    if not isinstance(environ, dict):
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(str(environ.get("HTTP_COOKIE", "")))
    except CookieError:
        return None
    morsel = cookies.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else None


@contextlib.contextmanager
def refused_on_outage() -> Iterator[None]:
    """A connect during a database outage is refused with the outage's error (the client tries again
    later), never a handshake that crashes and leaves the client waiting."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        outage.report(exc, "socket connect")
        raise socketio.exceptions.ConnectionRefusedError(outage.MESSAGE, outage.outage_ack(exc)["error"]) from exc


def malformed_ack(namespace: str, sid: str, bad: MalformedPacket) -> dict[str, Any]:
    """A packet that could not be read: one warning (no traceback: it is the client's fault, not ours) and
    the error ack, which python-socketio sends only if the packet asked for one."""
    log.warning("malformed socket packet", extra={"namespace": namespace, "sid": sid, "reason": bad.reason,
                                                   "size": bad.size})
    body = ErrorBody(error=ErrorInfo(code="malformed_packet", message=f"the packet could not be read: {bad.reason}",
                                     details=[ErrorDetail(field="packet", message=bad.reason)]))
    return {"ok": False, **body.model_dump(mode="json", exclude_none=True)}


def _malformed(event: str, data: Any) -> MalformedPacket | None:
    return data if event == MALFORMED_EVENT and isinstance(data, MalformedPacket) else None


Ack = dict[str, Any]
"""What a socket event answers (python-socketio sends it back as the event's acknowledgement)."""


class AgentNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """``/agent``: one connection per PC agent, authenticated by its token."""

    def __init__(self, presence: Presence, tokens: TokenCheck, handler: AgentEventHandler, metrics: Metrics,
                 screen: ScreenHandlers) -> None:
        super().__init__(ev.AGENT_NAMESPACE)
        self.presence = presence
        self.tokens = tokens
        self.handler = handler
        self.metrics = metrics
        self.screen = screen
        self._background: set[asyncio.Task[None]] = set()
        # Known names only as labels (a client must not grow the metrics without bound), each bound once: a
        # labels() call per message takes a lock and checks its names, on the path of every agent event.
        self._counted = {name: metrics.socket_events.labels(namespace="agent", event=name)
                         for name in [*ev.AGENT_EVENT_MODELS, "unknown"]}

    def _is_lifecycle(self, event: str, sid: Any) -> bool:
        """A real connect or disconnect, as opposed to a client *emitting* an event of that name.

        python-socketio hands both to ``trigger_event``; the real ones come while the sid is pending
        (not yet, or no longer, connected), a client's event only while it is connected. Without this
        an agent emitting ``disconnect`` would be forgotten while still connected.
        """
        return event in ("connect", "disconnect") and not self.server.manager.is_connected(sid, self.namespace)

    async def trigger_event(self, event: str, *args: Any) -> Ack | bool | None:
        if self._is_lifecycle(event, args[0]):
            if event == "connect":
                return await self._connect(args[0], args[2] if len(args) > 2 else None)
            self.presence.forget_agent(args[0])
            return None
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        principal = self.presence.agent_principal(sid)
        if principal is None:
            return {"ok": False, "error": {"code": "unauthorized", "message": "not authenticated", "details": []}}
        if (bad := _malformed(event, data)) is not None:
            return malformed_ack(self.namespace, sid, bad)
        if event == ev.AGENT_PING:  # a liveness probe: answered here, never reaching the database
            return {"ok": True}
        if event == sc.SCREEN_FRAME:  # [meta, bytes]: memory only, never the database
            return await self.screen.on_frame(principal, data, args[2] if len(args) > 2 else None)
        self._counted.get(event, self._counted["unknown"]).inc()
        with audit.acting(audit.actor_of(principal), "socket"):
            ack = await self.handler(principal, event, data)
        if event == ev.AGENT_HELLO and ack.get("ok") and principal.agent_id is not None:
            task = asyncio.get_running_loop().create_task(self.screen.agent_greeted(principal.agent_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return ack

    async def _connect(self, sid: str, auth: Any) -> bool:
        with refused_on_outage():
            principal = await self.tokens.principal(_token_from(auth))
        if principal is None or principal.kind != "agent" or principal.agent_id is None:
            raise socketio.exceptions.ConnectionRefusedError("an agent token is required")
        self.presence.remember_agent(sid, principal, plans_once=ev.PLANS_ONCE in _features_from(auth))
        return True


class DashboardNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    """``/dashboard``: browsers signed in (the session cookie, same-origin) or clients with a token of a person
    or an admin; they listen, and send only their heartbeat and the live screen's events (control and input need
    the operator role: ``screen_control.may_control``). Each joins its principal's rooms (``rooms``), so it hears
    only of its teams."""

    def __init__(self, presence: Presence, tokens: TokenCheck, metrics: Metrics, screen: ScreenHandlers,
                 rooms: Rooms) -> None:
        super().__init__(ev.DASHBOARD_NAMESPACE)
        self.presence = presence
        self.tokens = tokens
        self.metrics = metrics
        self.screen = screen
        self.rooms = rooms

    async def _who(self, environ: Any, auth: Any) -> Principal | None:
        """A token in the connect's ``auth`` wins; else the session cookie the browser sent with the handshake
        (SameSite=Strict: never from another site's page)."""
        token = _token_from(auth)
        if token is not None:
            return await self.tokens.principal(token)
        if not _same_origin(environ):  # a page of a sibling site (same site, other origin) gets no session
            return None
        return await self.tokens.session(_session_cookie(environ))

    def _is_lifecycle(self, event: str, sid: Any) -> bool:
        """A real connect or disconnect, not a client emitting one (see ``AgentNamespace._is_lifecycle``)."""
        return event in ("connect", "disconnect") and not self.server.manager.is_connected(sid, self.namespace)

    async def trigger_event(self, event: str, *args: Any) -> Ack | bool | None:
        if self._is_lifecycle(event, args[0]):
            if event == "connect":
                with refused_on_outage():
                    principal = await self._who(args[1] if len(args) > 1 else None,
                                                args[2] if len(args) > 2 else None)
                if principal is None or not principal.allows("viewer"):
                    raise socketio.exceptions.ConnectionRefusedError("sign in, or give a token of a person or an admin")
                await self.rooms.join(args[0], principal)
                self.presence.remember_dashboard(args[0], principal)
                return True
            gone = self.presence.dashboard_closed(args[0])
            with audit.acting(audit.actor_of(gone) if gone else audit.SYSTEM, "socket"):
                await self.screen.dashboard_gone(args[0])  # its control sessions end, in its name
            return None
        if (bad := _malformed(event, args[1] if len(args) > 1 else None)) is not None:
            return malformed_ack(self.namespace, args[0], bad)
        principal = self.presence.dashboard_principal(args[0])
        if event == ev.DASHBOARD_PING and principal is not None:
            return {"ok": True}  # the page's heartbeat: cheap, and not counted (one a second per page)
        if event in sc.DASHBOARD_SCREEN_EVENTS and principal is not None:
            self.metrics.socket_events.labels(namespace="dashboard", event=event).inc()
            with audit.acting(audit.actor_of(principal), "socket"):
                return await self.screen.on_dashboard(args[0], principal, event, args[1] if len(args) > 1 else None)
        # Dashboards send no other events: every one is counted under a single label.
        self.metrics.socket_events.labels(namespace="dashboard", event="unknown").inc()
        return {"ok": False, "error": {"code": "unknown_event", "message": f"unknown event {str(event)[:100]!r}",
                                       "details": []}}
