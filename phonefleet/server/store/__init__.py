"""All SQL lives in this package, one module per aggregate (procrastinate's layout)."""

from typing import Any

import asyncpg

Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Row = asyncpg.Record


def as_dict(row: Row) -> dict[str, Any]:
    return dict(row.items())
