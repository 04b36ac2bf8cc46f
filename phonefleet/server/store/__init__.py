"""All SQL lives in this package, one module per aggregate (procrastinate's layout)."""

from typing import Any

import asyncpg

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Row = asyncpg.Record

DEFAULT_TEAM = 1
"""The team 'default' (migration 0016): what existed before teams, and where things go when no team is named."""


def as_dict(row: Row) -> dict[str, Any]:
    return dict(row.items())
