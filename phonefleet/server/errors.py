"""Errors a service raises on bad input or an impossible request; REST and socket acks render them."""

from typing import Any

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


class Invalid(ServiceError):
    status = 422
    code = "validation_error"

    @classmethod
    def field(cls, field: str, message: str) -> "Invalid":
        return cls(f"{field}: {message}", [ErrorDetail(field=field, message=message)])

    @classmethod
    def from_validation(cls, exc: ValidationError, prefix: str = "") -> "Invalid":
        details = []
        for err in exc.errors(include_url=False):
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
