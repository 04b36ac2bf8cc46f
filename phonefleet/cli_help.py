"""How the three CLIs' ``--help`` reads: plain columns, each option's environment variable and default in
``[env var: ...; default: ...]``, and metavars (``URL``, ``N``, ``DIR``) instead of typer's ``<str>``/``<bool>``.

Rich help formatting reads ``[env PHONEFLEET_HOST]`` as markup and drops it ("Listen address ."), and prints a
type after every flag; plain formatting keeps what the help says. Every ``typer.Typer`` of ours is made with
:data:`APP_SETTINGS`.
"""

from typing import Any

import typer.core

APP_SETTINGS: dict[str, Any] = {"rich_markup_mode": None, "add_completion": False,
                                "pretty_exceptions_show_locals": False,
                                "context_settings": {"max_content_width": 110}}


def env_help(text: str, variable: str, default: object | None = None) -> str:
    """``"Listen address. [env var: PHONEFLEET_HOST; default: 127.0.0.1]"`` for a setting that the program reads
    from the environment itself (so typer must not read it too: a bad value is reported by the settings)."""
    extra = f"env var: {variable}" + (f"; default: {default}" if default is not None else "")
    return f"{text.rstrip()}  [{extra}]"


def _no_argument_type(self: typer.core.TyperArgument, ctx: Any) -> str | None:
    """An argument's metavar (``ID``, ``NAME``) already says what it is; typer would add ``<int>``."""
    return None


typer.core.TyperArgument.display_type_rich = _no_argument_type  # type: ignore[method-assign,assignment]
