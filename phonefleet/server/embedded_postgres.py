"""A private PostgreSQL in ``data_dir/pg`` that is never orphaned, shared by the processes that use it.

pgserver ships relocatable PostgreSQL 16 binaries on PyPI, so a fresh machine needs no system
PostgreSQL. Its own reference count (a list of bare pids) keeps the pid of a process that was
SIGKILLed, so the database then outlives every later process. Here the lifecycle is ours: each
process that uses the database is a *holder*, recorded by pid and start time under a file lock; a
dead holder (or a recycled pid) is pruned; whoever finds PostgreSQL running with no live holder
adopts it; the last live holder to stop stops it. A CLI command sharing a running server's database
is one more holder, so it never stops the server's database.
"""

import atexit
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

START_TIMEOUT_SEC = 60.0
STOP_TIMEOUT_SEC = 60.0
_START_TIME_SLACK = 0.05  # psutil derives start times from clock ticks (1/100 s): same process, same value


@dataclass(frozen=True)
class Holder:
    """One process's claim on the database: pid and start time identify it even after pid reuse."""

    id: str
    pid: int
    started: float

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return (abs(proc.create_time() - self.started) < _START_TIME_SLACK
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False


@dataclass(frozen=True)
class Postmaster:
    """The running PostgreSQL of a data dir, read from its ``postmaster.pid``."""

    pid: int
    status: str
    uri: str


def _this_process(handle_id: str) -> Holder:
    return Holder(handle_id, os.getpid(), psutil.Process().create_time())


def running_postmaster(pgdata: Path) -> Postmaster | None:
    """The PostgreSQL serving ``pgdata`` if one runs (a stale pid file or a recycled pid is not one)."""
    from pgserver.utils import PostmasterInfo

    try:
        info: Any = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # half-written while PostgreSQL starts or stops
        return None
    if info is None:
        return None
    try:
        proc = psutil.Process(info.pid)
        if proc.name() != "postgres" or proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return Postmaster(info.pid, info.status, str(info.get_uri()))


class EmbeddedPostgres:
    """``start()`` returns a DSN; ``stop()`` stops PostgreSQL if no other live process still holds it."""

    def __init__(self, data_dir: Path, *, keep_running: bool = False) -> None:
        self.data_dir = data_dir.resolve() / "pg"
        self.keep_running = keep_running
        self._holders_path = self.data_dir.parent / "pg.holders.json"
        self._lock_path = self.data_dir.parent / "pg.lock"
        self._holder: Holder | None = None

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._quiet_pgserver()
        with self._locked():
            holders = self._live_holders()
            postmaster = running_postmaster(self.data_dir)
            if postmaster is not None and postmaster.status != "ready":
                postmaster = self._wait_settled()
            if postmaster is None:
                postmaster = _PgCtl(self.data_dir).start()
            elif not holders:
                log.warning("adopting a PostgreSQL left running by a process that died",
                            extra={"pgdata": str(self.data_dir), "pid": postmaster.pid})
            self._holder = _this_process(uuid.uuid4().hex)
            self._save_holders([*holders, self._holder])
        atexit.register(self.stop)
        return postmaster.uri

    def stop(self) -> None:
        """Give up this process's hold; the last live holder stops PostgreSQL (unless ``keep_running``)."""
        if self._holder is None:
            return
        atexit.unregister(self.stop)
        with self._locked():
            others = [h for h in self._live_holders() if h.id != self._holder.id]
            self._save_holders(others)
            self._holder = None
            if others or self.keep_running:
                return
            _PgCtl(self.data_dir).stop()

    def stop_orphan(self) -> bool:
        """Stop this data dir's PostgreSQL if no live process holds it (its server was killed); True if
        one was stopped. For a supervisor that outlives the server, such as the demo."""
        self._quiet_pgserver()
        with self._locked():
            holders = self._live_holders()
            self._save_holders(holders)
            if holders or running_postmaster(self.data_dir) is None:
                return False
            _PgCtl(self.data_dir).stop()
            return True

    def _quiet_pgserver(self) -> None:
        """pgserver's import asks platformdirs for a runtime dir, which warns when none is set."""
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.data_dir.parent / "run"))
        (self.data_dir.parent / "run").mkdir(parents=True, exist_ok=True, mode=0o700)
        logging.getLogger("pgserver").setLevel(logging.WARNING)

    # ------------------------------------------------------------------ holders, under the lock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _live_holders(self) -> list[Holder]:
        """The recorded holders still alive; the dead ones (SIGKILLed, or pid recycled) are dropped."""
        try:
            raw = json.loads(self._holders_path.read_text())
            holders = [Holder(str(h["id"]), int(h["pid"]), float(h["started"])) for h in raw]
        except (OSError, ValueError, TypeError, KeyError):
            holders = []
        live = [h for h in holders if h.alive()]
        if len(live) != len(holders):
            log.info("pruned dead database holders", extra={"dead": [h.pid for h in holders if h not in live]})
        return live

    def _save_holders(self, holders: list[Holder]) -> None:
        tmp = self._holders_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(h) for h in holders]))
        tmp.replace(self._holders_path)

    def _wait_settled(self) -> Postmaster | None:
        """A PostgreSQL still starting up or shutting down (its owner died mid-way): wait until it is
        ready or gone."""
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            postmaster = running_postmaster(self.data_dir)
            if postmaster is None or postmaster.status == "ready":
                return postmaster
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL in {self.data_dir} neither became ready nor stopped")


def _pg_command(name: str) -> Callable[..., str]:
    """pgserver's wrapper around one of its binaries (``initdb``, ``pg_ctl``), made at its import."""
    import pgserver

    command: Callable[..., str] = getattr(pgserver, name)
    return command


def _system_user() -> str | None:
    return "pgserver" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root


def pg_ctl(pgdata: Path, *args: str, timeout: float = STOP_TIMEOUT_SEC + 5) -> str:
    """Run pgserver's ``pg_ctl`` on ``pgdata`` as the user PostgreSQL runs as (``restart``, ``stop``, ...)."""
    return _pg_command("pg_ctl")(list(args), pgdata=pgdata, user=_system_user(), timeout=timeout)


class _PgCtl:
    """Create, start and stop the cluster with pgserver's binaries (as its ``pgserver`` user under root)."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.user = _system_user()

    def start(self) -> Postmaster:
        from pgserver.utils import find_suitable_socket_dir

        self._prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            initdb = _pg_command("initdb")
            initdb(["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                   pgdata=self.pgdata, user=self.user)
        runtime = self.pgdata.parent / "run"
        runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        socket_dir = find_suitable_socket_dir(self.pgdata, runtime)
        if self.user is not None and socket_dir != self.pgdata:
            from pgserver.utils import ensure_prefix_permissions

            ensure_prefix_permissions(socket_dir)
            socket_dir.chmod(0o777)
        pg_ctl(self.pgdata, "-w", "-t", str(int(START_TIMEOUT_SEC)), "-o", '-h ""', "-o", f"-k {socket_dir}",
               "-l", str(self.pgdata / "log"), "start", timeout=START_TIMEOUT_SEC + 5)
        deadline = time.monotonic() + START_TIMEOUT_SEC
        while time.monotonic() < deadline:
            postmaster = running_postmaster(self.pgdata)
            if postmaster is not None and postmaster.status == "ready":
                return postmaster
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL in {self.pgdata} did not become ready; see {self.pgdata / 'log'}")

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; if that fails, signal the postmaster directly."""
        postmaster = running_postmaster(self.pgdata)
        if postmaster is None:
            return
        try:
            pg_ctl(self.pgdata, "-w", "-t", str(int(STOP_TIMEOUT_SEC)), "-m", "fast", "stop")
            return
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            log.warning("pg_ctl stop failed; signalling PostgreSQL", extra={"pid": postmaster.pid})
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(postmaster.pid)
            proc.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                proc.kill()

    def _prepare(self) -> None:
        """Under root, let the ``pgserver`` user reach the binaries and own the data dir (as pgserver does)."""
        if self.user is None:
            return
        import pwd
        import stat

        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(self.user)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | read)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
        entry = pwd.getpwnam(self.user)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
