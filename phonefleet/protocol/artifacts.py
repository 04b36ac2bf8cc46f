"""A run's files (screenshots, logcat spans, files pulled from the phone): what an agent says it made, and
what the server holds of them.

The agent describes each file where its bytes were made (size and sha256) and says so twice: in the run's
result (``FinishedItem.artifacts``), so the server knows what to expect before the bytes arrive, and with the
upload itself (the ``X-Artifact-*`` headers), so the server keeps only bytes that match. An artifact is
``uploading`` until its verified bytes are stored, ``stored`` after, and ``deleted`` once the retention duty
(or the agent, which lost its copy) took it away: a deleted artifact is still listed, with its reason.
"""

from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from phonefleet.protocol.times import UtcDatetime

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
"""No '/', no leading '.': a name can never leave its assignment's folder."""
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
MAX_ARTIFACT_BYTES: Final = 32 * 1024 * 1024
MAX_ARTIFACTS_PER_RUN: Final = 1000

# The upload's headers (``PUT /api/agent/artifacts/{id}/{name}``): what the bytes must be, and what they are.
HEADER_SHA256: Final = "X-Artifact-Sha256"
HEADER_BYTES: Final = "X-Artifact-Bytes"
HEADER_KIND: Final = "X-Artifact-Kind"
HEADER_STEP: Final = "X-Artifact-Step"
HEADER_TAKEN_AT: Final = "X-Artifact-Taken-At"

Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, description="Lower-case hex SHA-256 of the bytes.")]
ArtifactName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]


class ArtifactKind(StrEnum):
    screenshot = "screenshot"
    logcat = "logcat"
    file = "file"


class ArtifactStatus(StrEnum):
    uploading = "uploading"
    """Known from the run's result; its bytes are still on their way from the agent."""
    stored = "stored"
    """Its bytes arrived and matched their size and sha256."""
    deleted = "deleted"
    """Taken away (``deleted_reason``): by the retention duty, or lost on the agent before it was sent."""


def kind_of(name: str) -> ArtifactKind:
    """A file's kind when no one said (an older agent's upload): pictures are screenshots."""
    lowered = name.lower()
    if lowered.endswith((".png", ".jpg", ".jpeg", ".webp")):
        return ArtifactKind.screenshot
    if "logcat" in lowered:
        return ArtifactKind.logcat
    return ArtifactKind.file


class ArtifactInfo(BaseModel):
    """One file of a run as the agent describes it (in ``FinishedItem.artifacts`` and its outbox)."""

    model_config = ConfigDict(extra="forbid")

    name: ArtifactName
    kind: ArtifactKind
    bytes: int = Field(ge=0, le=MAX_ARTIFACT_BYTES)
    sha256: Sha256
    step_index: int | None = Field(default=None, ge=0, le=10_000, description="The plan step that made it.")
    taken_at: UtcDatetime | None = None


class Artifact(BaseModel):
    """An artifact as the server holds it (``GET /api/assignments/{id}/artifacts``)."""

    id: int | None = Field(default=None, description="Null only for a file stored before artifacts were recorded.")
    assignment_id: int
    device_id: int | None = None
    name: str
    kind: ArtifactKind
    bytes: int = Field(ge=0)
    sha256: str | None = Field(description="Null only for a file stored before uploads were verified.")
    step_index: int | None = None
    taken_at: UtcDatetime | None = None
    status: ArtifactStatus
    created_at: UtcDatetime | None = None
    stored_at: UtcDatetime | None = None
    deleted_at: UtcDatetime | None = None
    deleted_reason: str | None = None


class ArtifactPage(BaseModel):
    """A phone's artifacts, newest first (``GET /api/devices/{id}/artifacts``)."""

    items: list[Artifact]
    next_before: int | None = Field(description="Pass as ``before`` for the next (older) page; null at the end.")


class ArtifactLost(BaseModel):
    """``POST /api/agent/artifacts/{id}/{name}/lost``: the agent's copy is gone or changed; it will never come."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)
    artifact: ArtifactInfo | None = Field(default=None, description="What the file was to be: recorded (as "
                                          "deleted) when the run's result has not landed yet.")

