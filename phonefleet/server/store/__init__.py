"""All SQL lives in this package, one module per aggregate (procrastinate's layout)."""

from collections.abc import Sequence
from typing import Any

import asyncpg

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Row = asyncpg.Record

DEFAULT_TEAM = 1
"""The team 'default' (migration 0016): what existed before teams, and where things go when no team is named."""


def as_dict(row: Row) -> dict[str, Any]:
    return dict(row.items())


def teams_arg(teams: Sequence[int] | None) -> list[int] | None:
    """A ``teams`` filter as a ``bigint[]`` parameter, used as ``($n::bigint[] IS NULL OR x.team_id = ANY($n))``:
    None matches every team (an admin's view); an empty list, none."""
    return None if teams is None else list(teams)
