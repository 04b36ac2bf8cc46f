"""Files an agent produces for an assignment (screenshots, logcat, pulled files), kept under ``data_dir/artifacts``."""

import contextlib
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import StreamReader

from phonefleet.protocol.artifacts import MAX_ARTIFACT_BYTES, NAME_PATTERN
from phonefleet.server.errors import Invalid, ServiceError

NAME = re.compile(NAME_PATTERN)
"""No '/', no leading '.': a name can never leave its assignment's folder."""
MAX_BYTES = MAX_ARTIFACT_BYTES
PARTIAL = ".part"

INLINE_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".txt": "text/plain; charset=utf-8", ".log": "text/plain; charset=utf-8",
}
"""What a browser may show in place; anything else (an APK, HTML, SVG, ...) is only ever downloaded."""
DOWNLOAD_TYPE = "application/octet-stream"
ARTIFACT_TYPES = (*sorted({t.partition(";")[0] for t in INLINE_TYPES.values()}), DOWNLOAD_TYPE)
"""Every content type an artifact is served with."""


def serving_headers(name: str) -> dict[str, str]:
    """Headers for an artifact's bytes: an agent chose them, so the browser must never run them as a page.

    ``nosniff`` keeps the browser to the declared type; images and logs are shown inline with their
    own type, everything else is an opaque download (``Content-Disposition: attachment``).
    """
    headers = {"X-Content-Type-Options": "nosniff"}
    suffix = name[name.rfind("."):].lower() if "." in name else ""
    inline = INLINE_TYPES.get(suffix)
    if inline is not None:
        headers["Content-Type"] = inline
        headers["Content-Disposition"] = f'inline; filename="{name}"'
    else:
        headers["Content-Type"] = DOWNLOAD_TYPE
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return headers


class TooLarge(ServiceError):
    status = 413
    code = "too_large"


@dataclass(frozen=True)
class Received:
    """An upload's bytes on disk, not yet in place: its ``.part`` file, size and sha256."""

    part: Path
    size: int
    sha256: str


class ArtifactStore:
    """The files under ``data_dir/artifacts/<assignment>/<name>``. An upload streams to a ``.part`` file of its
    own (hashing as it goes) and is renamed into place only once verified, so a name only ever holds whole,
    checked bytes, and a crash mid-upload leaves only a ``.part`` file that is never served."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, assignment_id: int, name: str) -> Path:
        """``name`` was checked against ``NAME`` (so the filename in ``serving_headers`` needs no escaping)."""
        if not NAME.match(name):
            raise Invalid.field("name", "letters, digits, '.', '_' and '-' only, at most 100")
        if name.endswith(PARTIAL):
            raise Invalid.field("name", f"names ending in {PARTIAL!r} are kept for uploads in progress")
        return self.root / str(assignment_id) / name

    async def receive(self, assignment_id: int, name: str, body: StreamReader, *, limit: int = MAX_BYTES
                      ) -> Received:
        """Stream an upload to a ``.part`` file of its own, hashing it; more than ``limit`` bytes is refused
        (and nothing kept): ``TooLarge`` past ``MAX_BYTES``, else ``Invalid`` naming ``bytes``."""
        target = self.path(assignment_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{name}.{secrets.token_hex(6)}{PARTIAL}")
        digest = hashlib.sha256()
        size = 0
        try:
            with partial.open("wb") as out:
                while chunk := await body.read(256 * 1024):
                    size += len(chunk)
                    if size > limit:
                        if limit >= MAX_BYTES:
                            raise TooLarge(f"an artifact may be at most {MAX_BYTES // (1024 * 1024)} MiB")
                        raise Invalid.field("bytes", f"expected {limit} bytes, received more")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return Received(partial, size, digest.hexdigest())

    def place(self, received: Received, assignment_id: int, name: str) -> None:
        received.part.replace(self.path(assignment_id, name))

    @staticmethod
    def discard(received: Received) -> None:
        received.part.unlink(missing_ok=True)

    def remove(self, assignment_id: int, name: str) -> bool:
        """Delete a stored file; False when it was not there."""
        try:
            self.path(assignment_id, name).unlink()
        except FileNotFoundError:
            return False
        with contextlib.suppress(OSError):  # the folder goes with its last file
            (self.root / str(assignment_id)).rmdir()
        return True

    def sweep_partials(self, older_than_sec: float) -> list[Path]:
        """Remove ``.part`` files no upload has written to for ``older_than_sec``: what a server killed
        mid-upload left (the agent sends the whole file again, to a ``.part`` of its own). A live upload writes
        to its file as bytes come, so its modification time stays fresh."""
        cutoff = time.time() - older_than_sec
        removed: list[Path] = []
        for partial in self.root.glob(f"*/*{PARTIAL}"):
            with contextlib.suppress(FileNotFoundError):  # finished or discarded meanwhile
                if partial.stat().st_mtime < cutoff:
                    partial.unlink()
                    removed.append(partial)
        return removed

    def files(self, assignment_id: int) -> list[tuple[str, int]]:
        """The whole files in an assignment's folder (name, size)."""
        folder = self.root / str(assignment_id)
        if not folder.is_dir():
            return []
        return [(p.name, p.stat().st_size) for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.endswith(PARTIAL)]
