"""A test database reached through a ``TcpFaultProxy``: the server's link to PostgreSQL can be refused,
cut or stalled while the test keeps its own direct connection."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from phonefleet.sim.netfault import TcpFaultProxy


@dataclass
class ProxiedDatabase:
    proxy: TcpFaultProxy
    dsn: str
    """The test database's DSN through the proxy (give it to the server)."""
    direct_dsn: str
    """The same database, not through the proxy (for the test's own checks)."""


def proxy_for(dsn: str) -> tuple[TcpFaultProxy, str]:
    """A proxy to the PostgreSQL of ``dsn`` (TCP, or the Unix socket of the embedded one), and a
    loopback TCP DSN template with ``{port}`` standing for the proxy's port."""
    url = urlsplit(dsn)
    query = dict(parse_qsl(url.query))
    socket_dir = query.pop("host", None)
    user = f"{url.username or 'postgres'}" + (f":{url.password}" if url.password else "")
    if socket_dir and socket_dir.startswith("/"):
        proxy = TcpFaultProxy("", 0, upstream_unix=f"{socket_dir}/.s.PGSQL.{url.port or 5432}")
    else:
        proxy = TcpFaultProxy(url.hostname or "127.0.0.1", url.port or 5432)
    query.setdefault("sslmode", "disable")
    netloc = f"{user}@127.0.0.1:{{port}}"
    return proxy, urlunsplit((url.scheme, netloc, url.path, urlencode(query), ""))


@pytest.fixture
async def proxied_db(dsn: str) -> AsyncIterator[ProxiedDatabase]:
    """Ask for it before ``server_factory``: fixtures stop in reverse, so the server stops while its
    database is still reachable (a proxy gone first would fail the server's shutdown, not the test)."""
    proxy, template = proxy_for(dsn)
    port = await proxy.start()
    yield ProxiedDatabase(proxy, template.replace("{port}", str(port)), dsn)
    await proxy.stop()
