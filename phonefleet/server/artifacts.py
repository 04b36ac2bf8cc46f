"""Files an agent produces for an assignment (screenshots), kept under ``data_dir/artifacts``."""

import re
from pathlib import Path

from aiohttp import StreamReader

from phonefleet.server.errors import Invalid, ServiceError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""No '/', no leading '.': a name can never leave its assignment's folder."""
MAX_BYTES = 32 * 1024 * 1024
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


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, assignment_id: int, name: str) -> Path:
        """``name`` was checked against ``NAME`` (so the filename in ``serving_headers`` needs no escaping)."""
        if not NAME.match(name):
            raise Invalid.field("name", "letters, digits, '.', '_' and '-' only, at most 100")
        if name.endswith(PARTIAL):
            raise Invalid.field("name", f"names ending in {PARTIAL!r} are kept for uploads in progress")
        return self.root / str(assignment_id) / name

    async def save(self, assignment_id: int, name: str, body: StreamReader) -> int:
        """Stream the upload to disk (screenshots can exceed the 1 MiB JSON body limit)."""
        target = self.path(assignment_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + PARTIAL)
        size = 0
        with partial.open("wb") as out:
            while chunk := await body.read(256 * 1024):
                size += len(chunk)
                if size > MAX_BYTES:
                    out.close()
                    partial.unlink(missing_ok=True)
                    raise TooLarge(f"an artifact may be at most {MAX_BYTES // (1024 * 1024)} MiB")
                out.write(chunk)
        partial.replace(target)
        return size

    def list(self, assignment_id: int) -> list[dict[str, object]]:
        folder = self.root / str(assignment_id)
        if not folder.is_dir():
            return []
        return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.endswith(PARTIAL)]
