"""phonefleet's migrations in a Supabase CLI project: ``supabase db push`` reads ``supabase/migrations/
<version>_<name>.sql`` and records version and name in ``supabase_migrations.schema_migrations``. Our
``NNNN_name.sql`` files already have that shape (version ``NNNN``), so they are copied as they are, and
``database.migrate`` adopts what the CLI applied instead of running it again."""

from dataclasses import dataclass, field
from pathlib import Path

from phonefleet.server.database import migrations_dir


class ExportConflict(Exception):
    """A file of the same name with other content is in the way (never overwritten)."""


@dataclass
class Export:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def versions(self) -> list[str]:
        """The CLI's version of each file (``0001``), for ``supabase migration repair --status applied``."""
        return [name.split("_", 1)[0] for name in sorted(self.written + self.unchanged)]


def export_migrations(target: Path, source: Path | None = None) -> Export:
    """Copy every migration into ``target`` (made if missing); identical files are left, differing ones refused
    before anything is written."""
    files = sorted((source or migrations_dir()).glob("*.sql"))
    clashes = [p.name for p in files if (target / p.name).exists() and (target / p.name).read_bytes() != p.read_bytes()]
    if clashes:
        raise ExportConflict(f"{target} has other files named {', '.join(clashes)}")
    target.mkdir(parents=True, exist_ok=True)
    done = Export()
    for path in files:
        if (target / path.name).exists():
            done.unchanged.append(path.name)
            continue
        (target / path.name).write_bytes(path.read_bytes())
        done.written.append(path.name)
    return done
