"""SQL of the distribution switch: one row saying whether new assignments may be made anywhere."""

from phonefleet.server.store import Conn, Row


async def running(conn: Conn, *, lock: bool = False) -> bool:
    """``lock`` takes a share lock for the rest of the caller's transaction, so a stop waits for it."""
    value = await conn.fetchval(
        "SELECT running FROM scheduler_state WHERE id = 1" + (" FOR SHARE" if lock else ""))
    return value is None or bool(value)


async def state(conn: Conn) -> Row:
    row = await conn.fetchrow("SELECT running, changed_at, changed_by FROM scheduler_state WHERE id = 1")
    assert row is not None, "migration 0003 inserts the row"
    return row


async def set_running(conn: Conn, running: bool, actor: str) -> Row:
    """Flip the switch (waits for claims in flight, which hold the row's share lock)."""
    row = await conn.fetchrow(
        """UPDATE scheduler_state SET running = $1,
               changed_at = CASE WHEN running = $1 THEN changed_at ELSE now() END,
               changed_by = CASE WHEN running = $1 THEN changed_by ELSE $2 END
           WHERE id = 1 RETURNING running, changed_at, changed_by""",
        running, actor,
    )
    assert row is not None
    return row


async def open_assignment_counts(conn: Conn) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT status, count(*)::int AS n FROM assignments
           WHERE status IN ('pending', 'delivered', 'running', 'paused') GROUP BY status""")
    counts = {s: 0 for s in ("pending", "delivered", "running", "paused")}
    counts.update({r["status"]: r["n"] for r in rows})
    return counts
