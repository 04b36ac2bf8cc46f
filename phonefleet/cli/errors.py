"""How the CLI gives up: a message on stderr and the exit code that says whose mistake it was."""

from typing import NoReturn

import typer


def usage_error(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def fail(message: str, *more: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    for line in more:
        typer.echo(f"  {line}", err=True)
    raise typer.Exit(1)
