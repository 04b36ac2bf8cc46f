"""One conversation with the server per command; its failures become messages and exit 1."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer

from phonefleet.cli.config import config_path, options
from phonefleet.cli.errors import fail
from phonefleet.client import ApiError, PhonefleetClient, ServerUnreachable, UnexpectedAnswer

T = TypeVar("T")


def api_failure(exc: ApiError) -> NoReturn:
    """The server's message, then each field at fault (unless the message already says all of it)."""
    lines = [f"{d.field}: {d.message}" if d.field else d.message for d in exc.details]
    if lines == [exc.message]:
        lines = []
    if exc.status == 401:
        lines.append(f"give a token: --token, PHONEFLEET_TOKEN, or token = \"...\" in {config_path()}")
    fail(f"{exc.message} ({exc.status} {exc.code})", *lines)


def run(ctx: typer.Context, work: Callable[[PhonefleetClient], Awaitable[T]]) -> T:
    """Run one conversation with the server on a fresh event loop; failures become messages and exit 1."""
    opts = options(ctx)
    url, token = opts.connection()

    async def go() -> T:
        async with PhonefleetClient(url, token, timeout=opts.timeout) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except ApiError as exc:
        api_failure(exc)
    except ServerUnreachable as exc:
        fail(str(exc), "is the server running? set --url or PHONEFLEET_URL")
    except UnexpectedAnswer as exc:
        fail(str(exc), "is this CLI the same version as the server?")
