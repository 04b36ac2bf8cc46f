"""Errors a service raises on bad input or an impossible request; REST and socket acks render them."""

import re
from typing import Any

import orjson
from pydantic import ValidationError

from phonefleet.protocol.models import ErrorBody, ErrorDetail, ErrorInfo


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=ErrorInfo(code=self.code, message=self.message, details=self.details)).model_dump(
            mode="json", exclude_none=True
        )


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


MAX_DETAILS = 100
"""A body with thousands of bad items answers the first ones, not a response larger than the request."""

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_text_path(data: Any) -> str | None:
    """The path (``a.0.b``) of a string, key or value, that PostgreSQL cannot store, or None.

    NUL characters and lone surrogates pass JSON parsing (``"\\u0000"``, ``"\\ud800"``) and some
    model fields (free-form dicts), but text and jsonb columns refuse them; they are bad input, not
    a database failure. Iterative, so a deeply nested body cannot exhaust the stack.
    """
    try:  # the common case, decided in C: orjson writes a NUL as \u0000 and refuses a lone surrogate
        if b"\\u0000" not in orjson.dumps(data):
            return None
    except (orjson.JSONEncodeError, TypeError):
        pass  # a lone surrogate (or a value JSON has no word for): the walk finds where
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                return path
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                name = _UNSTORABLE.sub("\ufffd", str(key))
                sub = f"{path}.{name}" if path else name
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return sub
                stack.append((sub, item))
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}.{i}" if path else str(i), item) for i, item in reversed(list(enumerate(value))))
    return None


class Invalid(ServiceError):
    status = 422
    code = "validation_error"

    @classmethod
    def field(cls, field: str, message: str) -> "Invalid":
        return cls(f"{field}: {message}", [ErrorDetail(field=field, message=message)])

    @classmethod
    def check_text(cls, data: Any, prefix: str = "") -> None:
        """Raise naming the first string PostgreSQL cannot store (see ``unstorable_text_path``)."""
        path = unstorable_text_path(data)
        if path is not None:
            raise cls.field(f"{prefix}{path}" if path else (prefix.rstrip(".") or "body"),
                            "text may not contain NUL characters or unpaired surrogates")

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "") -> "Invalid":
        details = []
        for err in exc.errors(include_url=False)[:MAX_DETAILS]:
            loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
            field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or None)
            message = err["msg"].removeprefix("Value error, ")
            details.append(ErrorDetail(field=field, message=message, type=err["type"]))
        first = details[0] if details else ErrorDetail(message="invalid input")
        message = f"{first.field}: {first.message}" if first.field else first.message
        return cls(message, details)


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class TooManyAttempts(ServiceError):
    status = 429
    code = "too_many_attempts"
