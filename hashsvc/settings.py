"""Settings: the only reader of the environment.

Defaults live in ``config/defaults.toml``; a TOML file named by ``HASHSVC_CONFIG`` and then
``HASHSVC_<KEY>`` environment variables override them. Nothing here runs at import time.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hashsvc.errors import ConfigError
from hashsvc.sources.base import Limits

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")


@dataclass(frozen=True)
class Settings:
    """Every setting of a hashsvc process, typed; build it with :func:`load_settings`."""

    data_dir: str
    database_url: str
    db_retry_seconds: float
    redis_url: str
    workers: int
    chunk_size: int
    flush_seconds: float
    heif_thumbnails: bool
    decision_rule: str
    pdq_threshold: int
    pdq_support_threshold: int
    phash_threshold: int
    dhash_threshold: int
    min_pdq_quality: int
    video_min_frames: int
    video_min_fraction: float
    trim_frames: bool
    features_stage: bool
    feature_key_file: str
    report_signing_key: str
    max_image_pixels: int
    max_video_seconds: float
    video_time_budget: float
    max_file_bytes: int
    decode_memory_mb: int
    decode_cpu_seconds: float
    decode_timeout_seconds: float
    decode_plugins: str
    max_archive_depth: int
    max_archive_members: int
    max_expanded_bytes: int
    max_ratio: float
    ratio_floor_bytes: int
    reader_timeout_seconds: float
    reader_memory_mb: int
    evidence_roots: str
    s3_buckets: str
    s3_read_threads: int
    max_request_bytes: int
    lookup_max_hashes: int
    lookup_refresh_seconds: float
    api_secret: str
    rate_limit_per_minute: int
    audit_lookup_seconds: float
    status_rate_limit: str
    status_max_failures: int
    status_lockout_seconds: int
    intake_link_hours: int
    queue_name: str
    batch_files: int
    batch_bytes: int
    job_retries: int
    job_timeout: int
    dead_worker_after: int

    @property
    def data_path(self) -> Path:
        """The embedded store's folder (created on first use by the store)."""
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "hashsvc"

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL, normalised so that a plain postgresql:// URL uses psycopg 3."""
        url = self.database_url or f"sqlite:///{self.data_path / 'hashsvc.sqlite3'}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    @property
    def feature_key_path(self) -> Path:
        """The file holding the key that encrypts local features at rest."""
        return Path(self.feature_key_file).expanduser() if self.feature_key_file \
            else self.data_path / "feature.key"

    @property
    def report_signing_key_path(self) -> Path:
        """The Ed25519 private key (PEM) that signs deletion reports (hashsvc.signing)."""
        return Path(self.report_signing_key).expanduser() if self.report_signing_key \
            else self.data_path / "keys" / "report-signing.pem"

    @property
    def worker_count(self) -> int:
        """Decode/hash processes to use."""
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @property
    def limits(self) -> Limits:
        """Safety bounds for evidence readers."""
        return Limits(
            max_file_bytes=self.max_file_bytes, max_archive_depth=self.max_archive_depth,
            max_archive_members=self.max_archive_members,
            max_expanded_bytes=self.max_expanded_bytes, max_ratio=self.max_ratio,
            ratio_floor_bytes=self.ratio_floor_bytes,
            reader_timeout_seconds=self.reader_timeout_seconds,
            reader_memory_mb=self.reader_memory_mb,
        )

    @property
    def s3_bucket_list(self) -> list[str]:
        """The buckets that API scans may read (``s3_buckets``, separated by ':' or ',')."""
        return [name.strip() for name in self.s3_buckets.replace(",", ":").split(":")
                if name.strip()]

    def thresholds(self) -> dict[str, int]:
        """Per-algorithm match thresholds."""
        return {"pdq": self.pdq_threshold, "phash": self.phash_threshold,
                "dhash": self.dhash_threshold}

    def matching_summary(self) -> dict[str, object]:
        """The matching settings a report records."""
        return {"decision_rule": self.decision_rule, "thresholds": self.thresholds(),
                "pdq_support_threshold": self.pdq_support_threshold,
                "min_pdq_quality": self.min_pdq_quality, "trim_frames": self.trim_frames,
                "features_stage": self.features_stage,
                "video_min_frames": self.video_min_frames,
                "video_min_fraction": self.video_min_fraction}

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some settings changed (tests and CLI flags)."""
        return dataclasses.replace(self, **changes)


def _flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Section-free key/value pairs of a settings TOML document."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value))
        else:
            flat[key] = value
    return flat


def _coerce(name: str, raw: Any, kind: type) -> Any:
    """Convert a TOML or environment value to the field's type, with a clear error."""
    try:
        if kind is bool and isinstance(raw, str):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot use {raw!r} as {kind.__name__}") from exc


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, ``HASHSVC_CONFIG``, ``HASHSVC_*`` variables and ``overrides``."""
    env = os.environ if env is None else env
    values = _flatten(tomllib.loads(DEFAULTS_FILE.read_text()))
    if env.get("HASHSVC_CONFIG"):
        try:
            values.update(_flatten(tomllib.loads(Path(env["HASHSVC_CONFIG"]).read_text())))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"HASHSVC_CONFIG: {exc}") from exc
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    for name in fields:
        env_value = env.get(f"HASHSVC_{name.upper()}")
        if env_value is not None:
            values[name] = env_value
    values.update({k: v for k, v in overrides.items() if v is not None})
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    typed = {name: _coerce(name, values[name], kinds[str(f.type)]) for name, f in fields.items()}
    return Settings(**typed)
