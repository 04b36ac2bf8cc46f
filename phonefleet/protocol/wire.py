"""How the contract travels on Socket.IO: JSON text only, encoded with orjson.

The protocol never sends binary attachments, so packets skip python-socketio's walk of every
payload looking for bytes (with thousands of assignments per ``job:assign`` that walk cost more
than the encoding). Server, agent and simulator all use this one codec.
"""

from typing import Any

import orjson
import socketio


class OrJson:
    """orjson behind the interface python-socketio expects of a json module."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj, default=str).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        return orjson.loads(s)


class TextPacket(socketio.packet.Packet):  # type: ignore[misc]
    uses_binary_events = False
    json = OrJson
