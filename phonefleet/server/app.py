"""The application factory: everything is wired here, nothing is global."""

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import socketio
from aiohttp import web

from phonefleet.server import supabase_realtime
from phonefleet.server.accounts import Accounts
from phonefleet.server.agent_events import AgentEvents
from phonefleet.server.api import Api, ApiServices, error_middleware
from phonefleet.server.artifact_uploads import ArtifactUploads
from phonefleet.server.artifacts import ArtifactStore
from phonefleet.server.audit import AuditTrail
from phonefleet.server.auth import ADMIN_PREFIX, Authenticator, TokenCheck, hash_token, new_token
from phonefleet.server.bus import Bus
from phonefleet.server.completion import Completion
from phonefleet.server.config import Settings
from phonefleet.server.dashboard_push import DashboardPush
from phonefleet.server.database import EmbeddedPostgres, create_pool, migrate, wait_for_database
from phonefleet.server.distributor import Distributor
from phonefleet.server.duties.artifact_retention import ArtifactRetention
from phonefleet.server.duties.fill_sweeper import FillSweeper
from phonefleet.server.duties.health_watch import HealthWatch
from phonefleet.server.duties.job_activator import JobActivator
from phonefleet.server.duties.lease_rescuer import LeaseRescuer
from phonefleet.server.duties.retry_waker import RetryWaker
from phonefleet.server.evidence import Evidence
from phonefleet.server.fleet import Fleet
from phonefleet.server.fleet_health import FleetHealth
from phonefleet.server.job_control import JobControl
from phonefleet.server.maintenance import Maintenance
from phonefleet.server.metrics import Metrics
from phonefleet.server.namespaces import AgentNamespace, DashboardNamespace
from phonefleet.server.pauses import Pauses
from phonefleet.server.people import SignInPolicy
from phonefleet.server.presence import Presence
from phonefleet.server.queries import Queries
from phonefleet.server.realtime import Realtime, socket_server
from phonefleet.server.revocations import Revocations
from phonefleet.server.router import Router
from phonefleet.server.scheduler_control import SchedulerControl
from phonefleet.server.schedules import ScheduleFirer, Schedules
from phonefleet.server.screen_relay import ScreenRelay
from phonefleet.server.static import add_dashboard_routes, dashboard_dist
from phonefleet.server.store import admin_tokens as admin_tokens_store
from phonefleet.server.supabase_auth import SupabaseVerifier
from phonefleet.server.teams import Teams

log = logging.getLogger(__name__)


ADMIN_TOKEN_FILE = "admin_token"
INITIAL_ADMIN = "initial"


@dataclass(frozen=True)
class AdminTokenAtStart:
    """What start-up may say about the admin token: the secret only when this start generated it."""

    generated: str | None = None
    kept_in: Path | None = None
    from_env: bool = False


@dataclass
class Services:
    """The running parts of one server process; tests reach in here to drive maintenance."""

    settings: Settings
    dsn: str
    pool: asyncpg.Pool
    realtime: Realtime
    distributor: Distributor
    completion: Completion
    jobs: JobControl
    pauses: Pauses
    agent_events: AgentEvents
    scheduler: SchedulerControl
    schedules: Schedules
    maintenance: Maintenance
    bus: Bus
    revocations: Revocations
    admin_token: AdminTokenAtStart
    push: DashboardPush
    router: Router
    screen: ScreenRelay


SERVICES = web.AppKey("services", Services)
API_SERVICES = web.AppKey("api_services", ApiServices)


def _read_token(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _save_token(path: Path, token: str) -> None:
    """Created with mode 0600 (never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")


async def ensure_admin_token(pool: asyncpg.Pool, data_dir: Path, env_token: str | None) -> AdminTokenAtStart:
    """Make the first admin token when there is none (no stored one, none in the environment) and keep it in
    ``data_dir/admin_token``. A stale file (its token revoked) is removed, never written back to the database.
    Several nodes starting at once make one token: the unique name decides."""
    path = data_dir / ADMIN_TOKEN_FILE
    async with pool.acquire() as conn:
        kept = _read_token(path)
        if kept and (kept == env_token or await admin_tokens_store.by_hash(conn, hash_token(kept)) is not None):
            return AdminTokenAtStart(kept_in=path, from_env=bool(env_token))
        if kept is not None:
            path.unlink(missing_ok=True)
        if env_token or await admin_tokens_store.count(conn):
            return AdminTokenAtStart(from_env=bool(env_token))
        token = new_token(ADMIN_PREFIX)
        if await admin_tokens_store.add(conn, INITIAL_ADMIN, hash_token(token)) is None:
            return AdminTokenAtStart()  # another node, starting at the same moment, made it
    _save_token(path, token)
    return AdminTokenAtStart(generated=token, kept_in=path)


@dataclass(frozen=True)
class Database:
    dsn: str
    pool: asyncpg.Pool
    admin_token: AdminTokenAtStart


DATABASE = web.AppKey("database", Database)


def database_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The database: the embedded PostgreSQL (unless ``DATABASE_URL``), the pool, migrations, the first
    admin token. Stopped last."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        embedded: EmbeddedPostgres | None = None
        dsn = settings.database_url
        if dsn is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            dsn = embedded.start()
        try:
            await wait_for_database(dsn)
            pool = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                                     timeout_sec=settings.db_timeout_sec)
            try:
                async with pool.acquire() as conn:
                    await migrate(conn)
                    await supabase_realtime.missing_at_start(conn)
                admin_token = await ensure_admin_token(pool, settings.data_dir, settings.admin_token)
                app[DATABASE] = Database(dsn, pool, admin_token)
                yield
            finally:
                try:  # a query stuck on a dying database must not hold the shutdown forever
                    await asyncio.wait_for(pool.close(), timeout=5)
                except TimeoutError:
                    pool.terminate()
        finally:
            if embedded is not None:
                embedded.stop()

    return context


def build_services(settings: Settings, db: Database, sio: socketio.AsyncServer, authenticator: Authenticator,
                   metrics: Metrics, *, artifact_store: ArtifactStore) -> tuple[Services, ApiServices]:
    """Every service of this process, each given what it needs when it is made; nothing starts here."""
    pool = db.pool
    bus = Bus(db.dsn, pool)
    presence = Presence(metrics)
    queries = Queries(pool, grace_sec=settings.agent_grace_sec)
    push = DashboardPush(sio, presence, queries, bus, progress_hz=settings.progress_hz)
    realtime = Realtime(sio, presence, push, bus)
    distributor = Distributor(pool, realtime, metrics)
    fleet_health = FleetHealth(pool, realtime, distributor, metrics,
                               default_thresholds=settings.health_thresholds())
    completion = Completion(pool, realtime, distributor, metrics, settings, fleet_health=fleet_health)
    jobs = JobControl(pool, realtime, distributor)
    pauses = Pauses(pool, realtime, distributor)
    agent_events = AgentEvents(pool, realtime, distributor, completion=completion, pauses=pauses,
                               fleet_health=fleet_health, settings=settings)
    scheduler = SchedulerControl(pool, realtime, distributor, settings.agent_grace_sec)
    schedules = Schedules(pool, jobs, realtime)
    every = settings.maintenance_sec
    maintenance = Maintenance(pool, db.dsn, [
        LeaseRescuer(pool, completion, realtime, settings),
        ScheduleFirer(pool, schedules, jobs, settings),
        JobActivator(pool, jobs, distributor, realtime, interval_sec=every),
        RetryWaker(pool, distributor, interval_sec=every),
        FillSweeper(pool, distributor, interval_sec=every),
        HealthWatch(fleet_health, interval_sec=every),
        ArtifactRetention(pool, artifact_store, metrics, settings),
    ], settings)
    revocations = Revocations(pool, realtime, maintenance, bus, recheck_sec=settings.token_recheck_sec)
    router = Router(realtime, push, distributor, revocations)
    tokens = TokenCheck(authenticator, pool)
    accounts = Accounts(pool, revocations, bus, SignInPolicy(
        account_failures=settings.sign_in_account_failures, address_failures=settings.sign_in_address_failures,
        window_sec=settings.sign_in_window_sec, session_ttl_sec=settings.session_ttl_sec))
    screen = ScreenRelay(pool, sio, presence, realtime, distributor, idle_sec=settings.screen_control_idle_sec,
                         interval_ms=settings.screen_interval_ms)
    sio.register_namespace(AgentNamespace(presence, tokens, agent_events.handle, metrics, screen))
    sio.register_namespace(DashboardNamespace(presence, tokens, metrics, screen))
    services = Services(settings, db.dsn, pool, realtime, distributor, completion, jobs, pauses, agent_events,
                        scheduler, schedules, maintenance, bus, revocations, db.admin_token, push, router, screen)
    api = ApiServices(tokens=tokens, queries=queries, jobs=jobs, pauses=pauses, agent_events=agent_events,
                      scheduler=scheduler, schedules=schedules, revocations=revocations, accounts=accounts,
                      fleet=Fleet(pool, queries, distributor, realtime), fleet_health=fleet_health,
                      evidence=Evidence(pool, artifact_store),
                      screen=screen, artifacts=ArtifactUploads(pool, artifact_store), audit=AuditTrail(pool),
                      teams=Teams(pool, revocations, bus.node_id))
    return services, api


def running(start: Callable[[Services], Awaitable[None]], stop: Callable[[Services], Awaitable[None]]
            ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for one running part: started in order, stopped in reverse, and a part that
    failed to start leaves only the parts before it to stop."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        await start(services)
        try:
            yield
        finally:
            await stop(services)

    return context


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[error_middleware])
    metrics = Metrics()
    supabase = settings.supabase_auth()
    authenticator = Authenticator(settings.admin_token, SupabaseVerifier(supabase) if supabase.enabled else None,
                                  settings.supabase_first_role, session_ttl_sec=settings.session_ttl_sec)
    sio = socket_server(ping_interval_sec=settings.socket_ping_interval_sec,
                        ping_timeout_sec=settings.socket_ping_timeout_sec)
    sio.attach(app)
    api = Api(authenticator, metrics, ArtifactStore(settings.data_dir / "artifacts"))
    api.register(app)
    add_dashboard_routes(app, dashboard_dist())

    async def close_sockets(_app: web.Application) -> None:
        """Close agent and dashboard sockets first, so shutdown does not wait on them (agents reconnect).

        Bounded: engine.io waits for each socket's send queue to drain, which never happens on a
        connection that was reset under it."""
        async def disconnect_all() -> None:
            if sio.eio.sockets:  # checked in the same step as the disconnect starts
                await sio.eio.disconnect()

        try:
            await asyncio.wait_for(disconnect_all(), timeout=2)
        except TimeoutError:
            log.warning("sockets did not close in time; shutting down anyway")
        await sio.shutdown()

    app.on_shutdown.append(close_sockets)

    async def services_context(app: web.Application) -> AsyncIterator[None]:
        services, api_services = build_services(settings, app[DATABASE], sio, authenticator, metrics,
                                                artifact_store=api.artifacts)
        app[SERVICES] = services
        app[API_SERVICES] = api_services
        yield

    async def serving(app: web.Application) -> AsyncIterator[None]:
        api.bind(app[API_SERVICES])  # last: requests see every service started, or a 503 while starting
        yield

    app.cleanup_ctx.extend([
        database_context(settings),
        services_context,
        running(lambda s: s.bus.start(s.router.dispatch), lambda s: s.bus.stop()),
        running(lambda s: s.push.start(), lambda s: s.push.stop()),
        running(lambda s: s.distributor.start(), lambda s: s.distributor.stop()),
        running(_start_completion, lambda s: s.completion.stop()),
        running(_start_agent_events, lambda s: s.agent_events.stop()),
        running(lambda s: s.maintenance.start(), lambda s: s.maintenance.stop()),
        running(lambda s: s.revocations.start(), lambda s: s.revocations.stop()),
        running(lambda s: s.screen.start(), lambda s: s.screen.stop()),
        serving,
    ])
    return app


async def _start_completion(services: Services) -> None:
    services.completion.start()


async def _start_agent_events(services: Services) -> None:
    services.agent_events.start()
