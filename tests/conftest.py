"""Shared fixtures: settings in a temporary folder, stores on SQLite and real PostgreSQL,
and photographs from scikit-image's bundled data."""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from hashsvc.settings import Settings, load_settings
from hashsvc.store import Store, make_engine, migrate
from hashsvc.store.models import Base

# One headless Chromium for the whole session, shared by every browser test (tests/browser.py).
from browser import chromium  # noqa: E402,F401

PG_ADMIN_URL = os.environ.get("HASHSVC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated from the environment, with the embedded store under tmp_path."""
    return load_settings(env={}, data_dir=str(tmp_path / "data"), workers=2)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3-compatible server (moto's server mode) on loopback for the session: its URL."""
    import logging

    from moto.server import ThreadedMotoServer

    request_log = logging.getLogger("werkzeug")
    level = request_log.level
    request_log.setLevel(logging.ERROR)  # else one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    request_log.setLevel(level)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    """A migrated embedded (SQLite) store."""
    s = Store.open(settings)
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    import psycopg

    name = f"hashsvc_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:  # the suite must not pass silently without it
        pytest.fail(f"PostgreSQL is not reachable at {admin}: {exc}")
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_migrated(pg_url: str) -> str:
    """The session's PostgreSQL database with the schema migrated once."""
    engine = make_engine(load_settings(env={}, database_url=pg_url).db_url)
    migrate.upgrade(engine)
    engine.dispose()
    return pg_url


@pytest.fixture
def pg_settings(pg_migrated: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session's PostgreSQL database."""
    return load_settings(env={}, data_dir=str(tmp_path / "data"), database_url=pg_migrated,
                         workers=2)


@pytest.fixture
def pg_store(pg_settings: Settings) -> Iterator[Store]:
    """A store on PostgreSQL, emptied after the test."""
    s = Store.open(pg_settings, upgrade=False)
    yield s
    with s.engine.begin() as conn:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """The same test on the embedded store and on PostgreSQL."""
    name = "store" if request.param == "sqlite" else "pg_store"
    return request.getfixturevalue(name)


def photo(name: str) -> Image.Image:
    """A photograph from scikit-image's bundled data, as RGB."""
    from hashsvc.demo import photo as demo_photo

    return demo_photo(name)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    """Encode an image to bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth random picture (a distinct 'photo' per seed) for generated test sets."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
