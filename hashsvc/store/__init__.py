"""The store: the bank of registered hashes and the results of scans, in SQL.

Every write that a retried job could repeat is an insert that ignores conflicts on a natural
unique key, so doing it twice changes nothing. On PostgreSQL, the operations a scan relies on
(marked :func:`retry_on_disconnect`) ride out a server restart: when the connection drops or
new connections are refused they run again, for up to ``db_retry_seconds``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from sqlalchemy import Engine, create_engine, event, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from hashsvc.errors import ConfigError, HashsvcError, InputError, NotFound
from hashsvc.settings import Settings
from hashsvc.store import migrate
from hashsvc.store.models import (BankChange, BankHash, Case, ImageFeatures, RegisteredImage, Scan,
                                  ScanEvidence, ScanFile, ScanMatch, ScanProblem, utcnow)

EXACT = ("sha256", "md5")
#: The algorithm name of local-feature entries in the change feed.
FEATURES = "orb"
#: PostgreSQL advisory lock key held by writers of the change log (see Store.lock_feed).
_FEED_LOCK = 0x68617368_0001

#: SQLSTATEs of a server going away or not yet back: admin_shutdown, crash_shutdown,
#: cannot_connect_now (and class 08, connection exceptions).
_GONE_SQLSTATES = ("57P01", "57P02", "57P03")

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def retry_on_disconnect(fn: F) -> F:
    """Run a store operation again while PostgreSQL is unreachable (its first argument is the
    :class:`Store`), for up to the store's ``retry_seconds``; then the error stands.

    Only for operations that are safe to repeat even when the first attempt's commit went
    through unacknowledged: reads, inserts that ignore conflicts and plain updates (an
    appended error line or a batch's attempt counter may, rarely, count one more).
    """
    @functools.wraps(fn)
    def wrapper(store: "Store", *args: Any, **kwargs: Any) -> Any:
        delay, deadline = 0.1, None
        while True:
            try:
                return fn(store, *args, **kwargs)
            except DBAPIError as exc:
                if not store.is_disconnect(exc):
                    raise
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + store.retry_seconds
                if now >= deadline:
                    raise
                log.warning("database unreachable in %s (%s); retrying", fn.__name__,
                            str(exc.orig).strip().splitlines()[0] if exc.orig else exc)
                time.sleep(min(delay, deadline - now))
                delay = min(delay * 2, 2.0)
    return wrapper  # type: ignore[return-value]


def locator_hash(key: str) -> str:
    """Fixed-length digest of a locator key, for unique indexes on very long paths."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class BankChangeRow:
    """One entry of the bank's change feed."""

    seq: int
    op: str  # "add" or "remove"
    algorithm: str
    image_id: int
    variant: str
    value: str | None


@dataclass(frozen=True)
class RegisterResult:
    """What a registration changed."""

    images_added: int
    images_existing: int
    hashes_added: int


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and foreign keys for safe concurrent readers.

    ``hide_parameters``: a database error's text names the statement but not its values
    (hash values, case references, key digests), wherever that text ends up: a log, a failed
    RQ job's traceback in Redis, a scan's error list."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling commits before DDL, so a failed migration
            # would leave half a schema; SQLAlchemy emits BEGIN itself instead (see below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


class Store:
    """Bank and scan records behind narrow methods; the only code that writes SQL."""

    def __init__(self, engine: Engine, feature_key_path: Path | None = None,
                 retry_seconds: float = 30.0) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.feature_key_path = feature_key_path
        self.retry_seconds = retry_seconds
        self._cipher: Any = None

    @classmethod
    def open(cls, settings: Settings, upgrade: bool = True) -> "Store":
        """Open the configured database, bringing its schema up to date first."""
        engine = make_engine(settings.db_url)
        if upgrade:
            migrate.upgrade(engine)
        return cls(engine, settings.feature_key_path, settings.db_retry_seconds)

    def is_disconnect(self, exc: DBAPIError) -> bool:
        """Whether an error means PostgreSQL dropped the connection or refuses new ones (a
        restart, a failover): worth retrying. Never for SQLite (a full disk stays full)."""
        if self.engine.dialect.name != "postgresql":
            return False
        if exc.connection_invalidated:
            return True
        import psycopg

        if not isinstance(exc.orig, psycopg.OperationalError):
            return False
        state = getattr(exc.orig, "sqlstate", None)
        # No SQLSTATE: the connection itself failed (refused, reset, closed by the server).
        return state is None or state.startswith("08") or state in _GONE_SQLSTATES

    @property
    def cipher(self) -> Any:
        """The cipher for local features, its key loaded (or created) on first use."""
        if self._cipher is None:
            from hashsvc.features import FeatureCipher, load_or_create_key

            if self.feature_key_path is None:
                raise ConfigError("no feature key file is configured for this store")
            self._cipher = FeatureCipher(load_or_create_key(self.feature_key_path))
        return self._cipher

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    # -- helpers ---------------------------------------------------------------------------

    def _insert(self, model: type) -> Any:
        """A dialect-specific INSERT that supports ON CONFLICT DO NOTHING."""
        dialect = self.engine.dialect.name
        return (postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model))

    def lock_feed(self, session: Session) -> None:
        """Make this transaction the only writer of the change log until it ends.

        Readers page the log by sequence number. PostgreSQL hands out sequence numbers when
        rows are inserted, not when they commit, so without this a reader could see change 101
        before change 100 commits, move its cursor past 100 and never apply it (a withdrawal
        that never stops matching). Holding this lock from before the first change until
        commit makes changes commit in sequence order. SQLite writers are serialised anyway.
        """
        if self.engine.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FEED_LOCK})

    def _insert_ignore(self, session: Session, model: Any, rows: Sequence[Mapping[str, Any]]
                       ) -> list[Any]:
        """Insert rows, ignoring those that already exist; returns the new rows' keys."""
        if not rows:
            return []
        if model is BankChange:
            self.lock_feed(session)  # taken already by the bank's writers; here for safety
        table = model.__table__
        pk = list(table.primary_key.columns)[0]
        stmt = self._insert(table).on_conflict_do_nothing().returning(pk)
        # An executemany takes its columns from the first row and silently drops other rows'
        # extra keys, so rows are sent in groups with the same keys (column defaults intact).
        groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(sorted(row)), []).append(row)
        conn = session.connection()
        return [key for group in groups.values()
                for key in conn.execute(stmt, list(group)).scalars()]

    # -- bank ------------------------------------------------------------------------------

    def ensure_case(self, session: Session, ref: str,
                    features_consent: bool | None = None) -> Case:
        """The case with reference ``ref``, created if new; ``features_consent``, when given,
        is recorded as the victim's current answer (withdrawing it erases the features)."""
        self._insert_ignore(session, Case, [{"ref": ref, "created_at": utcnow(),
                                             "features_consent": bool(features_consent)}])
        case = session.execute(select(Case).where(Case.ref == ref)).scalar_one()
        if features_consent is not None and case.features_consent != features_consent:
            case.features_consent = features_consent
            if not features_consent:
                self._erase_features(session, self._case_image_ids(session, case.id))
        return case

    def register(self, case_ref: str, lines: Iterable[Mapping[str, Any]],
                 keep_features: bool = True, features_consent: bool | None = None
                 ) -> RegisterResult:
        """Add hash lines (as ``hashsvc hash`` prints them, or with only some hashes) under
        ``case_ref``; idempotent.

        Local features in the lines are kept (encrypted) only where the case records the
        victim's consent (``features_consent`` sets it first, when given) and ``keep_features``
        allows; otherwise they are dropped before anything is written.
        """
        added = existing = hashes_added = 0
        with self.sessions.begin() as session:
            self.lock_feed(session)
            case = self.ensure_case(session, case_ref, features_consent)
            if case.withdrawn_at is not None:
                raise InputError(f"case {case_ref} was withdrawn; register under a new case")
            keep = keep_features and case.features_consent
            for line in lines:
                new, count = self._register_one(session, case.id, normalize_line(line), keep)
                added += new
                existing += 1 - new
                hashes_added += count
        return RegisterResult(added, existing, hashes_added)

    def _register_one(self, session: Session, case_id: int, line: Mapping[str, Any],
                      keep_features: bool = True) -> tuple[int, int]:
        """Register one image's hashes; returns (1 if the image is new, hashes added)."""
        sha256 = line.get("sha256") or line_identity(line)
        frames = frame_lines(line)
        video = line.get("media") == "video"
        inserted = self._insert_ignore(session, RegisteredImage, [{
            "case_id": case_id, "sha256": sha256, "md5": line.get("md5"),
            "size": line.get("size"), "format": line.get("format"),
            "width": line.get("width"), "height": line.get("height"), "created_at": utcnow(),
            "media": "video" if video else "image", "frame_no": 0,
            "duration": line.get("duration") if video else None,
        }])
        image_id = session.execute(select(RegisteredImage.id).where(
            RegisteredImage.case_id == case_id, RegisteredImage.sha256 == sha256,
            RegisteredImage.frame_no == 0)).scalar_one()
        added = self._add_hashes(session, image_id, hash_rows(line))
        # Each kept frame of a video is a registered picture of its own under the video's row.
        for number, frame in enumerate(frames, 1):
            self._insert_ignore(session, RegisteredImage, [{
                "case_id": case_id, "sha256": sha256, "frame_no": number, "media": "frame",
                "parent_id": image_id, "frame_t": frame["t"], "format": line.get("format"),
                "width": line.get("width"), "height": line.get("height"),
                "created_at": utcnow()}])
            frame_id = session.execute(select(RegisteredImage.id).where(
                RegisteredImage.case_id == case_id, RegisteredImage.sha256 == sha256,
                RegisteredImage.frame_no == number)).scalar_one()
            added += self._add_hashes(session, frame_id, hash_rows(frame))
        if keep_features and line.get("features") and not video:
            self._store_features(session, image_id, line["features"])
        return (1 if inserted else 0), added

    def _add_hashes(self, session: Session, image_id: int,
                    rows: list[tuple[str, str, str, int | None]]) -> int:
        """Add one registered row's hashes and feed them to the indexes; returns how many."""
        new_ids = self._insert_ignore(session, BankHash, [
            {"image_id": image_id, "algorithm": alg, "variant": variant, "value": value,
             "quality": quality} for alg, variant, value, quality in rows])
        if new_ids:
            new = session.execute(select(BankHash.id, BankHash.algorithm, BankHash.variant)
                                  .where(BankHash.id.in_(new_ids)).order_by(BankHash.id)).all()
            self._insert_ignore(session, BankChange, [
                {"hash_id": hid, "op": "add", "algorithm": alg, "image_id": image_id,
                 "variant": variant, "at": utcnow()}
                for hid, alg, variant in new])
        return len(new_ids)

    def _store_features(self, session: Session, image_id: int, text: str) -> None:
        """Keep an image's local features, encrypted and bound to its id; idempotent."""
        from hashsvc.features import decode_line, to_bytes

        try:
            blob = to_bytes(decode_line(text))
        except (ValueError, HashsvcError) as exc:
            raise InputError(f"features: {exc}") from exc
        if self._insert_ignore(session, ImageFeatures, [{
                "image_id": image_id, "blob": self.cipher.encrypt(blob, image_id),
                "created_at": utcnow()}]):
            self._insert_ignore(session, BankChange, [{
                "hash_id": image_id, "op": "add", "algorithm": FEATURES, "image_id": image_id,
                "variant": "orig", "at": utcnow()}])

    def image_features(self, image_ids: Iterable[int] | None = None,
                       batch: int = 1000) -> Iterator[tuple[int, Any]]:
        """(image id, decrypted Features) of registered images (all when ids is None)."""
        from hashsvc.features import from_bytes

        last = 0
        wanted = None if image_ids is None else sorted(set(image_ids))
        with self.sessions() as session:
            while True:
                query = select(ImageFeatures.image_id, ImageFeatures.blob).where(
                    ImageFeatures.image_id > last).order_by(ImageFeatures.image_id).limit(batch)
                if wanted is not None:
                    query = query.where(ImageFeatures.image_id.in_(wanted))
                rows = session.execute(query).all()
                if not rows:
                    return
                for image_id, blob in rows:
                    yield image_id, from_bytes(self.cipher.decrypt(blob, image_id))
                last = rows[-1][0]

    def drop_features(self, case_ref: str) -> int:
        """Withdraw the case's consent to local features and erase them at once; its hashes
        stay. Returns how many images' features were erased."""
        with self.sessions.begin() as session:
            self.lock_feed(session)
            case = session.execute(select(Case).where(Case.ref == case_ref)).scalar_one_or_none()
            if case is None:
                raise NotFound(f"no case {case_ref}")
            case.features_consent = False
            return self._erase_features(session, self._case_image_ids(session, case.id))

    @staticmethod
    def _case_image_ids(session: Session, case_id: int) -> list[int]:
        """Ids of the case's registered files (not video frames: those have no features)."""
        return list(session.execute(select(RegisteredImage.id).where(
            RegisteredImage.case_id == case_id, RegisteredImage.parent_id.is_(None))).scalars())

    def _erase_features(self, session: Session, image_ids: list[int]) -> int:
        """Delete features of these images and feed their removal to every index."""
        if not image_ids:
            return 0
        present = list(session.execute(select(ImageFeatures.image_id).where(
            ImageFeatures.image_id.in_(image_ids))).scalars())
        session.query(ImageFeatures).filter(ImageFeatures.image_id.in_(present)).delete(
            synchronize_session=False)
        self._insert_ignore(session, BankChange, [
            {"hash_id": i, "op": "remove", "algorithm": FEATURES, "image_id": i,
             "variant": "orig", "at": utcnow()} for i in present])
        return len(present)

    def withdraw_case(self, case_ref: str) -> int:
        """Withdraw every hash of a case: they stop matching; a tombstone case row remains."""
        with self.sessions.begin() as session:
            self.lock_feed(session)
            case = session.execute(select(Case).where(Case.ref == case_ref)).scalar_one_or_none()
            if case is None:
                raise NotFound(f"no case {case_ref}")
            image_ids = self._case_image_ids(session, case.id)
            # Every row of the case: its files, and the frames of its videos (by a subquery:
            # a case's frames can outnumber what one statement may list).
            rows = select(RegisteredImage.id).where(RegisteredImage.case_id == case.id)
            hashes = session.execute(
                select(BankHash.id, BankHash.algorithm, BankHash.image_id, BankHash.variant)
                .where(BankHash.image_id.in_(rows)).order_by(BankHash.id)
            ).all() if image_ids else []
            self._insert_ignore(session, BankChange, [
                {"hash_id": hid, "op": "remove", "algorithm": alg, "image_id": image_id,
                 "variant": variant, "at": utcnow()}
                for hid, alg, image_id, variant in hashes])
            self._erase_features(session, image_ids)
            if image_ids:
                session.query(BankHash).filter(BankHash.image_id.in_(rows)).delete(
                    synchronize_session=False)
                # A video's frames first: they refer to its row.
                session.query(RegisteredImage).filter(
                    RegisteredImage.case_id == case.id,
                    RegisteredImage.parent_id.isnot(None)).delete(synchronize_session=False)
                session.query(RegisteredImage).filter(RegisteredImage.id.in_(image_ids)).delete(
                    synchronize_session=False)
            # The case row stays as the tombstone (id, reference, times) that the change feed,
            # the audit chain and the victim's status refer to; nothing registered remains.
            case.withdrawn_at = utcnow()
            case.features_consent = False
            return len(image_ids)

    @retry_on_disconnect
    def bank_cursor(self) -> int:
        """The newest change sequence number (0 for an empty bank)."""
        with self.sessions() as session:
            return int(session.execute(select(func.max(BankChange.seq))).scalar() or 0)

    def bank_hashes(self, algorithm: str, batch: int = 200_000
                    ) -> Iterator[list[tuple[int, int, str, str]]]:
        """Live hashes of one algorithm as batches of (hash id, image id, variant, hex value)."""
        last = 0
        with self.sessions() as session:
            while True:
                rows = session.execute(
                    select(BankHash.id, BankHash.image_id, BankHash.variant, BankHash.value)
                    .where(BankHash.algorithm == algorithm, BankHash.id > last)
                    .order_by(BankHash.id).limit(batch)).all()
                if not rows:
                    return
                yield [(r[0], r[1], r[2], r[3]) for r in rows]
                last = rows[-1][0]

    @retry_on_disconnect
    def count_hashes(self, algorithm: str) -> int:
        """How many live hashes of one algorithm the bank holds."""
        with self.sessions() as session:
            return int(session.execute(select(func.count()).select_from(BankHash)
                                       .where(BankHash.algorithm == algorithm)).scalar() or 0)

    @retry_on_disconnect
    def bank_changes(self, after: int, limit: int = 100_000) -> list[BankChangeRow]:
        """Changes after cursor ``after``, oldest first (value is None once withdrawn)."""
        with self.sessions() as session:
            rows = session.execute(
                select(BankChange.seq, BankChange.op, BankChange.algorithm, BankChange.image_id,
                       BankChange.variant, BankHash.value)
                .outerjoin(BankHash, (BankHash.id == BankChange.hash_id)
                           & (BankHash.algorithm == BankChange.algorithm))
                .where(BankChange.seq > after).order_by(BankChange.seq).limit(limit)).all()
        return [BankChangeRow(*r) for r in rows]

    @retry_on_disconnect
    def exact_lookup(self, algorithm: str, values: Sequence[str]) -> dict[str, list[int]]:
        """Registered image ids whose exact hash equals each value."""
        out: dict[str, list[int]] = {}
        if not values:
            return out
        with self.sessions() as session:
            for i in range(0, len(values), 500):
                rows = session.execute(select(BankHash.value, BankHash.image_id).where(
                    BankHash.algorithm == algorithm, BankHash.value.in_(values[i:i + 500]))).all()
                for value, image_id in rows:
                    out.setdefault(value, []).append(image_id)
        return out

    @retry_on_disconnect
    def image_details(self, image_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """For each image id: case reference and its hashes by algorithm and variant."""
        ids = sorted(set(image_ids))
        out: dict[int, dict[str, Any]] = {}
        if not ids:
            return out
        with self.sessions() as session:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                for image_id, ref, media, parent, frame_t, duration in session.execute(
                        select(RegisteredImage.id, Case.ref, RegisteredImage.media,
                               RegisteredImage.parent_id, RegisteredImage.frame_t,
                               RegisteredImage.duration).join(Case)
                        .where(RegisteredImage.id.in_(chunk))):
                    # "parent" and "t": a video frame's video and time; a video's "duration"
                    # and "times" of its frames (hashsvc.matching's video rule).
                    out[image_id] = {"case": ref, "hashes": {}, "media": media,
                                     "parent": parent, "t": frame_t}
                    if media == "video":
                        out[image_id].update({"duration": duration, "times": []})
                for parent, frame_t in session.execute(
                        select(RegisteredImage.parent_id, RegisteredImage.frame_t)
                        .where(RegisteredImage.parent_id.in_(chunk))):
                    if parent in out and frame_t is not None:
                        out[parent].setdefault("times", []).append(frame_t)
                for detail in out.values():
                    if "times" in detail:
                        detail["times"].sort()
                        detail["frames"] = len(detail["times"])
                for image_id, alg, variant, value in session.execute(
                        select(BankHash.image_id, BankHash.algorithm, BankHash.variant,
                               BankHash.value).where(BankHash.image_id.in_(chunk))):
                    if image_id in out:
                        out[image_id]["hashes"].setdefault(alg, {})[variant] = value
        return out

    def bank_stats(self) -> dict[str, Any]:
        """Counts of cases, images and hashes by algorithm."""
        with self.sessions() as session:
            by_alg = dict(session.execute(select(BankHash.algorithm, func.count())
                                          .group_by(BankHash.algorithm)).all())
            return {
                "cases": session.execute(select(func.count()).select_from(Case)
                                         .where(Case.withdrawn_at.is_(None))).scalar(),
                "images": session.execute(select(func.count()).select_from(RegisteredImage)
                                          .where(RegisteredImage.parent_id.is_(None))).scalar(),
                "videos": session.execute(select(func.count()).select_from(RegisteredImage)
                                          .where(RegisteredImage.media == "video")).scalar(),
                "video_frames": session.execute(
                    select(func.count()).select_from(RegisteredImage)
                    .where(RegisteredImage.parent_id.isnot(None))).scalar(),
                "hashes": by_alg,
                "cursor": session.execute(select(func.max(BankChange.seq))).scalar() or 0,
            }

    # -- scans -----------------------------------------------------------------------------

    @retry_on_disconnect
    def create_scan(self, source: str, label: str | None, settings: Mapping[str, Any],
                    scan_id: str | None = None, org_id: int | None = None) -> str:
        """Record a new scan (of ``org_id``'s, in the service) and return its id."""
        scan_id = scan_id or str(uuid.uuid4())
        with self.sessions.begin() as session:
            self._insert_ignore(session, Scan, [{
                "id": scan_id, "source": source, "label": label, "state": "queued",
                "created_at": utcnow(), "settings": dict(settings), "org_id": org_id}])
        return scan_id

    @retry_on_disconnect
    def set_scan_state(self, scan_id: str, state: str, bank_cursor: int | None = None) -> None:
        """Move a scan to ``state`` (running, done, failed, cancelled), stamping the time."""
        values: dict[str, Any] = {"state": state}
        if state == "running":
            values["started_at"] = utcnow()
        if state in ("done", "failed", "cancelled"):
            values["finished_at"] = utcnow()
        if bank_cursor is not None:
            values["bank_cursor"] = bank_cursor
        with self.sessions.begin() as session:
            session.execute(update(Scan).where(Scan.id == scan_id).values(**values))

    @retry_on_disconnect
    def get_scan(self, scan_id: str) -> Scan:
        """The scan row, or :class:`NotFound`."""
        with self.sessions() as session:
            scan = session.get(Scan, scan_id)
            if scan is None:
                raise NotFound(f"no scan {scan_id}")
            return scan

    @retry_on_disconnect
    def record_results(self, scan_id: str, files: Sequence[Mapping[str, Any]],
                       matches: Sequence[Mapping[str, Any]],
                       problems: Sequence[Mapping[str, Any]]) -> None:
        """Write one batch of results in one transaction; repeating it changes nothing."""
        with self.sessions.begin() as session:
            self._insert_ignore(session, ScanFile, [{"scan_id": scan_id, **f} for f in files])
            self._insert_ignore(session, ScanMatch, [{"scan_id": scan_id, **m} for m in matches])
            self._insert_ignore(session, ScanProblem,
                                [{"scan_id": scan_id, **p} for p in problems])

    @retry_on_disconnect
    def record_evidence(self, scan_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record evidence items a scan opened; an item recorded before is kept as it was."""
        with self.sessions.begin() as session:
            self._insert_ignore(session, ScanEvidence, [{"scan_id": scan_id, **r} for r in rows])

    def scan_evidence(self, scan_id: str) -> list[ScanEvidence]:
        """The evidence items of a scan, in path order."""
        with self.sessions() as session:
            return list(session.scalars(select(ScanEvidence)
                                        .where(ScanEvidence.scan_id == scan_id)
                                        .order_by(ScanEvidence.path)))

    @retry_on_disconnect
    def scan_counts(self, scan_id: str) -> dict[str, Any]:
        """Files by status, matches, errors and skipped files by reason."""
        with self.sessions() as session:
            by_status = dict(session.execute(
                select(ScanFile.status, func.count()).where(ScanFile.scan_id == scan_id)
                .group_by(ScanFile.status)).all())
            skipped = dict(session.execute(
                select(ScanProblem.reason, func.count())
                .where(ScanProblem.scan_id == scan_id, ScanProblem.skipped.is_(True))
                .group_by(ScanProblem.reason)).all())
            errors = session.execute(select(func.count()).select_from(ScanProblem).where(
                ScanProblem.scan_id == scan_id, ScanProblem.skipped.is_(False))).scalar()
            matched_files = session.execute(
                select(func.count(func.distinct(ScanMatch.locator_hash)))
                .where(ScanMatch.scan_id == scan_id)).scalar()
        return {"by_status": by_status, "skipped": skipped, "errors": errors or 0,
                "matched_files": matched_files or 0}

    def scan_matches(self, scan_id: str) -> list[tuple[ScanMatch, ScanFile]]:
        """Matches of a scan with the file each one is about, in path order."""
        with self.sessions() as session:
            rows = session.execute(
                select(ScanMatch, ScanFile)
                .join(ScanFile, (ScanFile.scan_id == ScanMatch.scan_id)
                      & (ScanFile.locator_hash == ScanMatch.locator_hash))
                .where(ScanMatch.scan_id == scan_id)
                .order_by(ScanFile.path, ScanMatch.distance, ScanMatch.image_id)).all()
        return [(m, f) for m, f in rows]

    def scan_problems(self, scan_id: str, skipped: bool = False) -> list[ScanProblem]:
        """Errors (or skips) of a scan in path order."""
        with self.sessions() as session:
            return list(session.execute(
                select(ScanProblem).where(ScanProblem.scan_id == scan_id,
                                          ScanProblem.skipped.is_(skipped))
                .order_by(ScanProblem.path, ScanProblem.stage)).scalars())


def normalize_line(line: Mapping[str, Any]) -> dict[str, Any]:
    """A hash line with its exact hashes beside ``hashes`` (where ``hashsvc hash`` puts them)
    and at least one hash; InputError if it carries none.

    Lines with only some hashes are accepted (``{"hashes": {"pdq": HEX}}``, a platform's or
    an older tool's output): ``sha256`` and ``md5`` may come inside ``hashes``.
    """
    out = dict(line)
    hashes = out.get("hashes") or {}
    if not isinstance(hashes, Mapping):
        raise InputError("hashes must be an object of algorithm: hex")
    hashes = dict(hashes)
    for name in EXACT:
        value = hashes.pop(name, None)
        if value is not None:
            if out.get(name) not in (None, value):
                raise InputError(f"two different {name} values in one line")
            out[name] = value
    out["hashes"] = hashes
    if not (out.get("sha256") or out.get("md5") or hashes or out.get("frames")):
        raise InputError("the line carries no hash")
    return out


def line_identity(line: Mapping[str, Any]) -> str:
    """What identifies a registration made without the file's sha256: ``~`` and 63 hex digits
    of a digest of its hashes, so that registering the same line twice adds nothing. It is
    never a file hash: exact matching uses only the sha256 a line carries."""
    import json

    keys = ("md5", "hashes", "variants", "frames", "media")
    canonical = json.dumps({k: line.get(k) for k in keys}, sort_keys=True,
                           separators=(",", ":"), default=str)
    return "~" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:63]


def hash_rows(line: Mapping[str, Any]) -> list[tuple[str, str, str, int | None]]:
    """(algorithm, variant, value, quality) rows of a hash line, validated."""
    from hashsvc.hashing import ALGORITHMS, VARIANT_CODES

    bits = {a.name: a.bits for a in ALGORITHMS}
    rows: list[tuple[str, str, str, int | None]] = []
    for alg, hex_len in (("sha256", 64), ("md5", 32)):
        if line.get(alg):
            rows.append((alg, "orig", _check_hex(line[alg], hex_len, alg), None))
    quality = line.get("quality") or {}
    for alg, value in (line.get("hashes") or {}).items():
        if alg not in bits:
            raise InputError(f"unknown hash algorithm {alg!r}")
        rows.append((alg, "orig", _check_hex(value, bits[alg] // 4, alg), quality.get(alg)))
    for alg, variants in (line.get("variants") or {}).items():
        if alg not in bits:
            raise InputError(f"unknown hash algorithm {alg!r}")
        for variant, value in variants.items():
            if variant not in VARIANT_CODES:
                raise InputError(f"unknown variant {variant!r} of {alg}")
            if variant != "orig":
                rows.append((alg, variant, _check_hex(value, bits[alg] // 4, alg),
                             quality.get(alg)))
    return rows


#: Most frames one registered video may carry (hashsvc.video keeps at most MAX_FRAMES).
MAX_VIDEO_FRAMES = 1000


def frame_lines(line: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The frames of a video's hash line, validated; [] for a picture's line."""
    frames = line.get("frames")
    if line.get("media") not in (None, "image", "video"):
        raise InputError("media must be \"image\" or \"video\"")
    duration = line.get("duration")
    if duration is not None and (not isinstance(duration, (int, float))
                                 or isinstance(duration, bool) or not 0 <= duration < 1e9):
        raise InputError("duration must be a number of seconds")
    if frames is None:
        return []
    if line.get("media") != "video":
        raise InputError("frames are only allowed in a line with media \"video\"")
    if not isinstance(frames, list) or len(frames) > MAX_VIDEO_FRAMES:
        raise InputError(f"frames must be a list of at most {MAX_VIDEO_FRAMES} frames")
    out = []
    for number, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise InputError(f"frames[{number}] must be an object")
        t = frame.get("t")
        if (not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t < 1e9):
            raise InputError(f"frames[{number}].t must be a number of seconds")
        if frame.get("sha256") or frame.get("md5") or frame.get("frames"):
            raise InputError(f"frames[{number}] may hold perceptual hashes only")
        for key in ("hashes", "quality", "variants"):
            if frame.get(key) is not None and not isinstance(frame[key], dict):
                raise InputError(f"frames[{number}].{key} must be an object")
        for alg, variants in (frame.get("variants") or {}).items():
            if not isinstance(variants, dict):
                raise InputError(f"frames[{number}].variants.{alg} must be an object")
        for alg, q in (frame.get("quality") or {}).items():
            if not isinstance(q, int) or isinstance(q, bool) or not 0 <= q <= 100:
                raise InputError(f"frames[{number}].quality.{alg} must be an integer "
                                 "from 0 to 100")
        try:
            rows = hash_rows(frame)
        except InputError as exc:
            raise InputError(f"frames[{number}]: {exc}") from exc
        if not rows:
            raise InputError(f"frames[{number}] has no hashes")
        out.append({**frame, "t": float(t)})
    return out


def _check_hex(value: Any, length: int, name: str) -> str:
    """Lower-case hex of the expected length, or :class:`InputError`."""
    if not isinstance(value, str) or len(value) != length:
        raise InputError(f"{name}: expected {length} hex digits")
    try:
        int(value, 16)
    except ValueError as exc:
        raise InputError(f"{name}: not hexadecimal") from exc
    return value.lower()


__all__ = ["Store", "RegisterResult", "BankChangeRow", "locator_hash", "hash_rows", "frame_lines",
           "normalize_line", "line_identity",
           "make_engine"]
