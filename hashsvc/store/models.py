"""SQLAlchemy models of the bank (cases, registered images, hashes) and of scans."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, String,
                        Text, UniqueConstraint)
from sqlalchemy import false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for large banks.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Timezone-aware now, for default column values."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base; naming convention keeps constraint names stable across databases."""


Base.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Org(Base):
    """An organisation: a charity, a police force, a platform, or the operator."""

    __tablename__ = "orgs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A platform granted bank sync may page the change feed (GET /v1/bank/changes).
    bank_sync: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ApiKey(Base):
    """An API key of an org with exactly one role; only a hash of the key is stored."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # charity, forensic, platform, admin
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # public part, for lookup
    key_hash: Mapped[str] = mapped_column(String(128))
    label: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """Append-only audit log; each entry's hash covers the previous one's, so edits show."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    org_id: Mapped[int | None] = mapped_column(BigInteger)
    key_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class Case(Base):
    """A victim's case, known to hashsvc only by its pseudonymous reference."""

    __tablename__ = "cases"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The victim's secret (sha256 of it; shown once) for GET /v1/status and withdrawal.
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    # Whether the victim agreed to keeping crop-robust local features; without it, hashes only.
    features_consent: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=false())
    # Wrong secrets in a row, and until when the case refuses every secret after too many.
    secret_failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RegisteredImage(Base):
    """One image registered under a case: its exact hashes and facts, never its pixels.

    A registered video is one row (``media`` "video", frame_no 0) holding the file's exact
    hashes, and one row per kept frame (``media`` "frame", frame_no 1, 2, ...; ``parent_id`` the
    video's row, ``frame_t`` its time) holding that frame's perceptual hashes, so every frame is
    a bank entry of its own that the indexes, the change feed and withdrawal treat like a
    picture.
    """

    __tablename__ = "registered_images"
    __table_args__ = (UniqueConstraint("case_id", "sha256", "frame_no"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    # Of the file (a frame: of its video). A line registered without one gets "~" and a digest
    # of its hashes instead (store.line_identity): an identity, never matched as a file hash.
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str | None] = mapped_column(String(32))
    size: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    media: Mapped[str] = mapped_column(String(8), default="image", server_default="image")
    frame_no: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("registered_images.id"),
                                                  index=True)
    frame_t: Mapped[float | None] = mapped_column(Float)  # seconds from the video's start
    duration: Mapped[float | None] = mapped_column(Float)  # of a video, in seconds


class BankHash(Base):
    """One hash value of a registered image: an algorithm, an orientation variant, a value."""

    __tablename__ = "bank_hashes"
    __table_args__ = (
        UniqueConstraint("image_id", "algorithm", "variant"),
        Index("ix_bank_hashes_algorithm_value", "algorithm", "value"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("registered_images.id"))
    algorithm: Mapped[str] = mapped_column(String(16))
    variant: Mapped[str] = mapped_column(String(16), default="orig")
    value: Mapped[str] = mapped_column(String(64))
    quality: Mapped[int | None] = mapped_column(Integer)


class BankChange(Base):
    """Append-only feed of additions and withdrawals: the cursor that keeps indexes current."""

    __tablename__ = "bank_changes"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True)
    hash_id: Mapped[int] = mapped_column(BigInteger, index=True)
    op: Mapped[str] = mapped_column(String(8))  # "add" or "remove"
    algorithm: Mapped[str] = mapped_column(String(16))
    # Kept here because a withdrawal erases the hash row; indexes need both to drop the entry.
    image_id: Mapped[int] = mapped_column(BigInteger)
    variant: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Scan(Base):
    """One scan of one evidence source."""

    __tablename__ = "scans"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    settings: Mapped[dict | None] = mapped_column(JSON)
    bank_cursor: Mapped[int | None] = mapped_column(BigInteger)
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"), index=True)
    files_enumerated: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    batches_total: Mapped[int | None] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=false())
    error: Mapped[str | None] = mapped_column(Text)


class ScanBatch(Base):
    """One batch job of a distributed scan: which top-level files it covers and its state."""

    __tablename__ = "scan_batches"
    __table_args__ = (UniqueConstraint("scan_id", "batch_no"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    batch_no: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    entries: Mapped[list] = mapped_column(JSON)  # top-level locators (paths or keys) to walk
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ScanFile(Base):
    """One file examined by a scan (an image, another file, or a container)."""

    __tablename__ = "scan_files"
    __table_args__ = (UniqueConstraint("scan_id", "locator_hash"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"))
    locator_hash: Mapped[str] = mapped_column(String(64))
    locator: Mapped[str] = mapped_column(Text)  # Locator.key(): the chain of links as JSON
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # hashed, not-image, container, error
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    md5: Mapped[str | None] = mapped_column(String(32))
    format: Mapped[str | None] = mapped_column(String(16))
    hashes: Mapped[dict | None] = mapped_column(JSON)
    from_thumbnail: Mapped[bool] = mapped_column(Boolean, default=False)


class ScanMatch(Base):
    """A scanned file that matched a registered image under the decision rule."""

    __tablename__ = "scan_matches"
    __table_args__ = (UniqueConstraint("scan_id", "locator_hash", "image_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    locator_hash: Mapped[str] = mapped_column(String(64))
    image_id: Mapped[int] = mapped_column(BigInteger)
    case_ref: Mapped[str] = mapped_column(String(64))
    algorithm: Mapped[str] = mapped_column(String(16))
    distance: Mapped[int] = mapped_column(Integer)
    distances: Mapped[dict] = mapped_column(JSON)
    variant: Mapped[str | None] = mapped_column(String(16))
    # Which frames made a match to or from a video (hashsvc.matching, docs/video.md).
    video: Mapped[dict | None] = mapped_column(JSON)


class ScanProblem(Base):
    """A file a scan could not read or decode (an error), or skipped on purpose (counted)."""

    __tablename__ = "scan_problems"
    __table_args__ = (UniqueConstraint("scan_id", "locator_hash", "stage"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    locator_hash: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(32))


class ScanEvidence(Base):
    """An evidence item a scan opened: its hashes, any stored hash it was verified against, and
    what the reader found in it (partitions, file systems, coverage)."""

    __tablename__ = "scan_evidence"
    __table_args__ = (UniqueConstraint("scan_id", "locator_hash"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    locator_hash: Mapped[str] = mapped_column(String(64))
    locator: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    md5: Mapped[str | None] = mapped_column(String(32))
    stored_md5: Mapped[str | None] = mapped_column(String(32))
    verified: Mapped[bool | None] = mapped_column(Boolean)
    details: Mapped[dict | None] = mapped_column(JSON)


class ImageFeatures(Base):
    """Local features of a registered image (for crops), encrypted: as sensitive as the image.

    Kept only where the registration carried them (the case consented); erased on withdrawal.
    """

    __tablename__ = "image_features"
    image_id: Mapped[int] = mapped_column(ForeignKey("registered_images.id"), primary_key=True)
    blob: Mapped[bytes] = mapped_column(LargeBinary)  # AES-GCM, bound to image_id
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MatchReview(Base):
    """An analyst's decision on a matched file of a scan: confirmed or rejected, with a reason.

    Decisions are appended, never updated: the newest row for a file is its decision, and the
    earlier ones stay as its history (each change is also an audit entry).
    """

    __tablename__ = "match_reviews"
    __table_args__ = (Index("ix_match_reviews_scan_file", "scan_id", "file_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"))
    file_id: Mapped[int] = mapped_column(ForeignKey("scan_files.id"))  # the match id
    decision: Mapped[str] = mapped_column(String(16))  # "confirmed" or "rejected"
    reason: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(Text)  # the analyst's name as given
    org_id: Mapped[int | None] = mapped_column(ForeignKey("orgs.id"))
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))  # None: the CLI
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WipeRecord(Base):
    """How a medium of a scan was sanitised (NIST SP 800-88 certificate fields), as entered by
    the analyst; carried into the deletion and verification reports."""

    __tablename__ = "wipe_records"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scan_id: Mapped[str] = mapped_column(ForeignKey("scans.id"), index=True)
    fields: Mapped[dict] = mapped_column(JSON)
    recorded_by: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PlatformMatch(Base):
    """A registered image that a platform's lookup matched (first time only): what the victim's
    status counts. Kept after a withdrawal, which erases the image row, so it names the case."""

    __tablename__ = "platform_matches"
    __table_args__ = (UniqueConstraint("org_id", "image_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    image_id: Mapped[int] = mapped_column(BigInteger)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TakedownFeedback(Base):
    """A platform's word on what it did with a match: removed, not_found or appealed."""

    __tablename__ = "takedown_feedback"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("orgs.id"))
    key_id: Mapped[int | None] = mapped_column(BigId)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    image_id: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IssuedReport(Base):
    """A signed deletion report that named a case's images (one row per report and case): the
    victim's status counts them, and learns nothing else of them."""

    __tablename__ = "issued_reports"
    report_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), primary_key=True, index=True)
    scan_id: Mapped[str] = mapped_column(String(36))
    document_sha256: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IntakeLink(Base):
    """A one-time registration link a charity made for one of its cases: the victim's intake
    page registers hashes with its code once, before it expires. Only a digest of the code is
    stored (it is shown once, in the link)."""

    __tablename__ = "intake_links"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
