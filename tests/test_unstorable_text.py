"""What PostgreSQL cannot store is found, with its path, whichever way it is found (orjson's pass or the walk)."""

import pytest

from phonefleet.server.errors import unstorable_text_path

DEEP: object = "fine"
for _ in range(1000):  # deeper than orjson writes: the walk decides
    DEEP = [DEEP]


@pytest.mark.parametrize(("data", "path"), [
    ({"a": [1, "ok", {"b": None}], "c": True}, None),
    ({"text": "a \\u0000 written out, not a NUL"}, None),  # orjson escapes the backslash: the walk clears it
    ({"a": [1, {"b": "x\x00y"}]}, "a.1.b"),
    ({"a": {"b\x00": 1}}, "a.b\ufffd"),
    ({"a": ["ok", "\ud800"]}, "a.1"),
    ({"\udc00": "x"}, "\ufffd"),
    ({1: "x\x00"}, "1"),  # a key JSON has no word for: the walk
    ("\x00", ""),
    (DEEP, None),
    ([[["\x00"]]], "0.0.0"),
])
def test_the_first_unstorable_string_is_named(data: object, path: str | None) -> None:
    assert unstorable_text_path(data) == path
