"""A reader of PostgreSQL's logical replication protocol (``pgoutput``, proto_version 1), as much as a test
needs to see what a publication carries: which table, which operation, the old row (if the replica identity
sends one) and the new one."""

import struct
from dataclasses import dataclass, field


@dataclass
class Change:
    op: str  # "insert" | "update" | "delete"
    table: str
    new: dict[str, str | None] = field(default_factory=dict)
    old: dict[str, str | None] | None = None
    """The old row an UPDATE or DELETE carries: every column under REPLICA IDENTITY FULL ('O'), the key's
    columns under DEFAULT ('K', and for an UPDATE only when the key changed), else None."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from("!" + fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return int(value)

    def byte(self) -> str:
        self.at += 1
        return chr(self.data[self.at - 1])

    def string(self) -> str:
        end = self.data.index(b"\0", self.at)
        text = self.data[self.at:end].decode()
        self.at = end + 1
        return text

    def tuple(self, columns: list[str]) -> dict[str, str | None]:
        row: dict[str, str | None] = {}
        for name in columns[: self.take("h")]:
            kind = self.byte()
            if kind == "t":
                size = self.take("i")
                row[name] = self.data[self.at:self.at + size].decode()
                self.at += size
            elif kind == "n":
                row[name] = None
            # "u": an unchanged TOASTed value, not sent
        return row


def decode(messages: list[bytes]) -> list[Change]:
    """The row changes among a slot's messages, in order (relation messages give the names)."""
    relations: dict[int, tuple[str, list[str]]] = {}
    changes: list[Change] = []
    for message in messages:
        r = _Reader(message)
        kind = r.byte()
        if kind == "R":
            rel = r.take("I")
            r.string()  # namespace
            name = r.string()
            r.byte()  # replica identity setting
            columns = []
            for _ in range(r.take("h")):
                r.take("b")
                columns.append(r.string())
                r.take("I")
                r.take("i")
            relations[rel] = (name, columns)
        elif kind in "IUD":
            name, columns = relations[r.take("I")]
            change = Change({"I": "insert", "U": "update", "D": "delete"}[kind], name)
            marker = r.byte()
            if marker in "KO":
                change.old = r.tuple(columns)
                marker = r.byte() if kind == "U" else ""
            if marker == "N":
                change.new = r.tuple(columns)
            changes.append(change)
    return changes
