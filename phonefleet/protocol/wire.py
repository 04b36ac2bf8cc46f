"""How the contract travels on Socket.IO: JSON text, encoded with orjson.

Only the live screen's frames (``screen.BINARY_EVENTS``, known by name) carry binary attachments, so every
other packet skips python-socketio's walk of the payload looking for bytes (with thousands of assignments per
``job:assign`` that walk cost more than the encoding). Server, agent and simulator all use this one codec.
"""

from dataclasses import dataclass
from typing import Any, Final

import orjson
import socketio

from phonefleet.protocol.screen import BINARY_EVENTS

MALFORMED_EVENT: Final = "\x00malformed"
"""The event name a malformed event packet is delivered under (with a ``MalformedPacket`` as its one
argument); no client can send it as such, since its argument is not something JSON can carry."""


class OrJson:
    """orjson behind the interface python-socketio expects of a json module."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj, default=str).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        return orjson.loads(s)


@dataclass(frozen=True, slots=True)
class MalformedPacket:
    """A packet whose payload is not valid JSON (``NaN``, a cut-off text, ...), or an event that is not
    ``[name, args...]``: handed on in place of the payload, so the receiver answers instead of crashing."""

    reason: str
    size: int


def _event_problem(data: Any) -> str | None:
    if not isinstance(data, list) or not data:
        return "an event is a JSON array [name, ...]"
    if not isinstance(data[0], str):
        return "an event's name must be a string"
    return None


_UNBINARY = {socketio.packet.BINARY_EVENT: socketio.packet.EVENT, socketio.packet.BINARY_ACK: socketio.packet.ACK}


class TextPacket(socketio.packet.Packet):  # type: ignore[misc]
    uses_binary_events = False
    json = OrJson

    def __init__(self, packet_type: int = socketio.packet.EVENT, data: Any = None,  # noqa: PLR0917 (its base's)
                 namespace: str | None = None, id: int | None = None, binary: bool | None = None,
                 encoded_packet: str | None = None) -> None:
        super().__init__(packet_type, data, namespace, id, binary, encoded_packet)
        if (packet_type == socketio.packet.EVENT and encoded_packet is None and isinstance(data, list) and data
                and data[0] in BINARY_EVENTS and self.data_is_binary(data)):
            self.packet_type = socketio.packet.BINARY_EVENT  # a frame: its bytes go as an attachment

    def decode(self, encoded_packet: str) -> int:
        """Decode as python-socketio does, except that a payload that does not parse never raises: python-socketio
        would log the exception with a traceback and never answer the ack the client waits for.

        An event becomes ``[MALFORMED_EVENT, MalformedPacket]`` (its namespace answers and logs it), an ack
        ``[MalformedPacket]`` (the callback's validation refuses it), a connect's auth a ``MalformedPacket``
        (no token: refused).
        """
        try:
            attachments: int = super().decode(encoded_packet)
        except ValueError as exc:  # orjson.JSONDecodeError is one; so are a bad id or attachment count
            if self.packet_type not in (socketio.packet.EVENT, socketio.packet.ACK, socketio.packet.CONNECT):
                raise
            self._malformed(str(exc), encoded_packet)
            return 0
        if attachments == 0 and self.packet_type in _UNBINARY:
            # "binary" with nothing attached: python-socketio would wait for an attachment that never comes (the
            # event never answered, the connection's next message taken for its bytes); it is a plain one
            self.packet_type = _UNBINARY[self.packet_type]
        if self.packet_type == socketio.packet.EVENT:
            problem = _event_problem(self.data)
            if problem is not None:
                self._malformed(problem, encoded_packet)
        return attachments

    def _malformed(self, reason: str, encoded_packet: str) -> None:
        bad = MalformedPacket(reason=reason[:200], size=len(encoded_packet))
        data: object = bad
        if self.packet_type == socketio.packet.EVENT:
            data = [MALFORMED_EVENT, bad]
        elif self.packet_type == socketio.packet.ACK:
            data = [bad]
        self.data = data
