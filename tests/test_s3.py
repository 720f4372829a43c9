"""The S3 source against a real S3-compatible server (moto's, on loopback): versions and delete
markers, pagination, streamed and ranged reads, parallel reads, and scans through every path
(embedded, the CLI, batch jobs in process and on RQ workers, the API)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import py7zr
import pytest
from botocore.config import Config

from hashsvc.errors import LimitExceeded, SourceError
from hashsvc.pipeline import run_scan
from hashsvc.report import build_report
from hashsvc.settings import Settings
from hashsvc.sources import Limits, open_source
from hashsvc.sources.base import Entry, EvidenceSeen, Item, Problem, Unit
from hashsvc.sources.s3 import S3Source, parse_s3_uri
from hashsvc.store import Store
from hashsvc.store.progress import scan_progress
from workers import jobs

from conftest import encode, photo
from test_api import api_settings, make_api, wait_for_scan
from test_jobs import (  # noqa: F401 - redis_server, service_settings, workers: fixtures
    WorkerPool,
    redis_server,
    service_settings,
    summary,
    wait_final,
    workers,
)
from test_pipeline import register

MiB = 1024 * 1024


# -- the server and its buckets ------------------------------------------------------------------

@dataclass
class S3:
    """The session's S3 server, with this test's AWS environment, and a client to fill it."""

    endpoint: str
    client: Any

    def bucket(self, versioned: bool = False) -> str:
        """A new empty bucket with a unique name."""
        name = f"evidence-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        if versioned:
            self.client.put_bucket_versioning(Bucket=name,
                                              VersioningConfiguration={"Status": "Enabled"})
        return name

    def put(self, bucket: str, key: str, body: bytes) -> str | None:
        """Upload one object; its version id (None in an unversioned bucket)."""
        response = self.client.put_object(Bucket=bucket, Key=key, Body=body)
        return response.get("VersionId")

    def put_many(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Upload many objects at once."""
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda kv: self.put(bucket, *kv), objects.items()))


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    """The S3 server with dummy credentials in the environment (for this test only)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
                 "AWS_ENDPOINT_URL_S3", "HASHSVC_S3_READ_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.client("s3", config=Config(max_pool_connections=16))
    yield S3(s3_endpoint, client)
    client.close()


def jpeg(name: str, size: int | None = None) -> bytes:
    """A photograph as a JPEG file, resized to a square of ``size`` pixels if given."""
    picture = photo(name)
    return encode(picture.resize((size, size)) if size else picture, "JPEG")


@dataclass
class Exhibit:
    """A versioned bucket in which one picture was overwritten and another deleted."""

    bucket: str
    overwritten: str  # version id of IMG_0001's first content (a registered photo)
    deleted: str  # version id of IMG_0002's only content, behind a delete marker
    uri: str


def versioned_exhibit(s3: S3) -> Exhibit:
    """DCIM/IMG_0001.JPG overwritten, DCIM/IMG_0002.JPG deleted, IMG_0003 live, a folder
    marker, and a copy of a registered photo outside the scanned prefix."""
    bucket = s3.bucket(versioned=True)
    s3.put(bucket, "DCIM/", b"")
    overwritten = s3.put(bucket, "DCIM/IMG_0001.JPG", jpeg("astronaut", 300))
    s3.put(bucket, "DCIM/IMG_0001.JPG", jpeg("camera"))
    deleted = s3.put(bucket, "DCIM/IMG_0002.JPG", jpeg("coffee"))
    s3.client.delete_object(Bucket=bucket, Key="DCIM/IMG_0002.JPG")
    s3.put(bucket, "DCIM/IMG_0003.JPG", jpeg("moon"))
    s3.put(bucket, "Other/IMG_0009.JPG", jpeg("astronaut"))
    assert overwritten and deleted
    return Exhibit(bucket, overwritten, deleted, f"s3://{bucket}/DCIM/")


def read_all(items: Iterator[Item]) -> list[tuple[str, Any]]:
    """Walk items as (locator key, what was read), reading entries as they are yielded: the
    bytes or the read's exception for an Entry, text for a Problem, else the item itself."""
    out: list[tuple[str, Any]] = []
    for item in items:
        if isinstance(item, Entry):
            try:
                out.append((item.info.locator.key(), item.read()))
            except SourceError as exc:
                out.append((item.info.locator.key(), exc))
        elif isinstance(item, Problem):
            out.append((item.locator.key(), f"problem {item.stage}: {item.message}"))
        else:
            out.append(("item", item))
    return out


# -- versions and delete markers ------------------------------------------------------------------

def test_overwritten_and_deleted_versions_are_found_and_matched(s3: S3, store: Store,
                                                                settings: Settings) -> None:
    register(store, "CASE-1", "astronaut", "coffee")
    exhibit = versioned_exhibit(s3)
    report = build_report(store, run_scan(store, settings, exhibit.uri))

    assert report["state"] == "done" and report["errors"] == []
    assert report["files_scanned"] == report["images_hashed"] == 4  # four versions, no marker
    found = {m["version_id"]: m for m in report["matches"]}
    assert set(found) == {exhibit.overwritten, exhibit.deleted}
    old, gone = found[exhibit.overwritten], found[exhibit.deleted]
    assert old["path"] == f"{exhibit.bucket}/DCIM/IMG_0001.JPG" and old["deleted"] is True
    assert gone["path"] == f"{exhibit.bucket}/DCIM/IMG_0002.JPG" and gone["deleted"] is True
    assert old["case"] == gone["case"] == "CASE-1"
    # IMG_0001's first content was overwritten; IMG_0002's was the last before its deletion.
    assert old["locator"][-1]["attrs"]["latest"] == "false"
    assert gone["locator"][-1]["attrs"]["latest"] == "true"
    assert old["locator"][0] == {"kind": "s3", "name": exhibit.bucket}

    [evidence] = report["evidence"]
    details = evidence["details"]
    assert evidence["kind"] == "s3" and evidence["path"] == exhibit.bucket
    assert details["versioning"] == "enabled" and details["prefix"] == "DCIM/"
    assert details["endpoint"] == s3.endpoint
    assert (details["objects"], details["object_versions"], details["noncurrent_versions"],
            details["delete_markers"], details["deleted_objects"]) == (3, 4, 2, 1, 1)
    assert details["coverage"] == {"listed": 4,
                                   "not_readable": {"delete-marker": 1, "folder-marker": 1}}
    assert evidence["size"] == details["bytes"] > 0


def test_units_name_exactly_what_the_walk_names(s3: S3) -> None:
    exhibit = versioned_exhibit(s3)
    source = open_source(exhibit.uri)
    assert isinstance(source, S3Source)
    try:
        listing = list(source.units())
        walked = read_all(source.walk())
        units = [u for u in listing if isinstance(u, Unit)]
        by_units = read_all(source.walk_units([u.key for u in units]))
    finally:
        source.close()
    assert len(units) == 4 and all(u.size > 0 for u in units)
    assert [u.key["v"] for u in units if u.key["k"] == "DCIM/IMG_0002.JPG"] == [exhibit.deleted]
    assert walked[:-1] == by_units and len({k for k, _ in by_units}) == 4
    # The evidence item closes both the listing and the walk (each listing has its own time).
    listed, seen = listing[-1], walked[-1][1]
    assert isinstance(listed, EvidenceSeen) and isinstance(seen, EvidenceSeen)
    assert {**listed.details, "listed_at": ""} == {**seen.details, "listed_at": ""}
    # A distributed batch's keys are stored as JSON.
    assert json.loads(json.dumps([u.key for u in units])) == [u.key for u in units]


def test_hostile_keys_are_kept_raw_and_shown_neutralised(s3: S3) -> None:
    bucket = s3.bucket()
    keys = {"../../etc/passwd.jpg": "etc/passwd.jpg", "/abs/x.jpg": "abs/x.jpg",
            "DCIM/\x1b[31mred\x01.jpg": "DCIM/\ufffd[31mred\ufffd.jpg",
            "a//b.jpg": "a/b.jpg", "\u00fc/\u65e5\u672c.jpg": "\u00fc/\u65e5\u672c.jpg"}
    s3.put_many(bucket, {key: key.encode() for key in keys})
    source = S3Source(f"s3://{bucket}/", Limits())
    try:
        entries = [(i.info.locator, i.read()) for i in source.walk() if isinstance(i, Entry)]
    finally:
        source.close()
    assert sorted(loc.links[-1].name for loc, _ in entries) == sorted(keys)
    for loc, data in entries:
        assert data == loc.links[-1].name.encode()
        assert loc.path == f"{bucket}/{keys[loc.links[-1].name]}"


# -- pagination -------------------------------------------------------------------------------

def test_listing_pages_through_more_than_a_thousand_versions(s3: S3) -> None:
    bucket = s3.bucket(versioned=True)
    s3.put_many(bucket, {f"obj/{i:04d}": f"obj/{i:04d}".encode() for i in range(998)})
    # Four versions of one key, listed 999th to 1002nd: across the end of the first page.
    versions = [s3.put(bucket, "obj/0998", f"v{n}".encode()) for n in range(4)]
    s3.put(bucket, "obj/0999", b"obj/0999")
    source = S3Source(f"s3://{bucket}/obj/", Limits())
    try:
        units = [u for u in source.units() if isinstance(u, Unit)]
        walked = [(item.info.locator, item.read()) for item in source.walk()
                  if isinstance(item, Entry)]
    finally:
        source.close()
    assert len(units) == 1003
    keys = [u.key["k"] for u in units]
    assert keys == sorted(keys) and len(set(keys)) == 1000
    split = [u.key for u in units if u.key["k"] == "obj/0998"]
    assert [k["v"] for k in split] == versions[::-1]  # newest first
    assert [(k["l"], k["d"]) for k in split] == [(True, False)] + [(False, True)] * 3
    # Every object's bytes arrive with its own locator, in listing order.
    assert [loc.links[-1].name for loc, _ in walked] == keys
    assert all(data == loc.links[-1].name.encode() for loc, data in walked
               if loc.links[-1].name != "obj/0998")
    assert [data for loc, data in walked if loc.links[-1].name == "obj/0998"] == [
        b"v3", b"v2", b"v1", b"v0"]


def test_listing_pages_through_more_than_a_thousand_objects(s3: S3) -> None:
    bucket = s3.bucket()
    s3.put_many(bucket, {f"DCIM/{i:04d}.bin": b"x" for i in range(1003)})
    s3.put(bucket, "elsewhere.bin", b"x")
    source = S3Source(f"s3://{bucket}/DCIM/", Limits())
    try:
        listing = list(source.units())
    finally:
        source.close()
    units = [u for u in listing if isinstance(u, Unit)]
    assert [u.key["k"] for u in units] == [f"DCIM/{i:04d}.bin" for i in range(1003)]
    assert all(u.key["v"] is None and u.key["l"] and not u.key["d"] for u in units)
    evidence = listing[-1]
    assert isinstance(evidence, EvidenceSeen)
    assert evidence.details["versioning"] == "never enabled"
    assert evidence.details["listing"] == "ListObjectsV2"
    assert evidence.details["object_versions"] == 1003 and evidence.size == 1003


# -- large objects: streamed, ranged, refused -----------------------------------------------------

@dataclass
class GetLog:
    """Every GetObject a source's client made: key, Range header and bytes returned."""

    calls: list[tuple[str, str | None, int]] = field(default_factory=list)

    def attach(self, source: S3Source) -> None:
        """Record the GETs of ``source``'s client."""
        events = source.client.meta.events
        events.register("before-parameter-build.s3.GetObject", self._params)
        events.register("after-call.s3.GetObject", self._done)

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["test_get"] = (params["Key"], params.get("Range"))

    def _done(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        key, byte_range = context["test_get"]
        self.calls.append((key, byte_range, int(parsed.get("ContentLength", 0))))

    def of(self, key: str) -> list[tuple[str | None, int]]:
        """The GETs of one key: (Range, bytes)."""
        return [(r, n) for k, r, n in self.calls if k == key]


def big_zip(rng: np.random.Generator) -> bytes:
    """A 9 MiB incompressible video, then a registered photo, in a zip (stored)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("DCIM/clip.mp4", rng.bytes(9 * MiB))
        archive.writestr("DCIM/IMG_0001.JPG", jpeg("astronaut", 400))
    return buf.getvalue()


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz of the given members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def seven_zip(members: dict[str, bytes]) -> bytes:
    """A .7z of the given members."""
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return buf.getvalue()


@pytest.fixture
def large_objects(s3: S3) -> tuple[str, dict[str, bytes]]:
    """A bucket with archives of every kind of reader and an oversized plain object."""
    rng = np.random.default_rng(5)
    objects = {
        "big/archive.zip": big_zip(rng),
        "big/backup.tar.gz": tar_gz({"Pictures/coffee.jpg": jpeg("coffee")}),
        "big/photos.7z": seven_zip({"chelsea.jpg": jpeg("chelsea")}),
        "big/raw.jpg": rng.bytes(3 * MiB),
    }
    bucket = s3.bucket()
    s3.put_many(bucket, objects)
    return bucket, objects


def test_archives_are_walked_in_place_and_large_objects_refused(
        large_objects: tuple[str, dict[str, bytes]], store: Store, settings: Settings) -> None:
    bucket, _ = large_objects
    register(store, "CASE-1", "astronaut", "coffee", "chelsea")
    small = settings.replace(max_file_bytes=1 * MiB)
    report = build_report(store, run_scan(store, small, f"s3://{bucket}/big/"))
    assert report["state"] == "done" and report["containers"] == 3
    assert sorted(m["path"] for m in report["matches"]) == [
        f"{bucket}/big/archive.zip/DCIM/IMG_0001.JPG",
        f"{bucket}/big/backup.tar.gz/Pictures/coffee.jpg",
        f"{bucket}/big/photos.7z/chelsea.jpg"]
    assert all(m["version_id"] is None and m["deleted"] is False for m in report["matches"])
    errors = {e["path"]: e for e in report["errors"]}
    assert set(errors) == {f"{bucket}/big/raw.jpg", f"{bucket}/big/archive.zip/DCIM/clip.mp4"}
    raw = errors[f"{bucket}/big/raw.jpg"]
    assert raw["stage"] == "read"
    assert raw["message"] == (f"S3 object {bucket}/big/raw.jpg is {3 * MiB} bytes, more than "
                              f"max_file_bytes={MiB}; not read")


def test_large_objects_are_never_downloaded_whole(
        large_objects: tuple[str, dict[str, bytes]]) -> None:
    bucket, objects = large_objects
    source = S3Source(f"s3://{bucket}/big/", Limits(max_file_bytes=1 * MiB))
    log = GetLog()
    log.attach(source)
    try:
        walked = read_all(source.walk())
    finally:
        source.close()
    # The oversized picture: one ranged GET of its first 512 bytes, then refused.
    assert log.of("big/raw.jpg") == [("bytes=0-511", 512)]
    [refused] = [v for k, v in walked if '"big/raw.jpg"' in k]
    assert isinstance(refused, LimitExceeded)
    assert str(refused) == (f"S3 object {bucket}/big/raw.jpg is {3 * MiB} bytes, more than "
                            f"max_file_bytes={MiB}; not read")
    # The zip: ranged GETs of at most one block each, far less than the whole object.
    zip_gets = log.of("big/archive.zip")
    assert zip_gets and all(r is not None and n <= 4 * MiB for r, n in zip_gets)
    assert sum(n for _, n in zip_gets) < len(objects["big/archive.zip"]) * 0.8
    assert [v for k, v in walked if "IMG_0001.JPG" in k] == [jpeg("astronaut", 400)]
    [clip] = [v for k, v in walked if "clip.mp4" in k]
    assert isinstance(clip, LimitExceeded) and "max_file_bytes" in str(clip)


# -- read failures ----------------------------------------------------------------------------

def test_a_version_gone_or_changed_after_listing_is_a_read_problem(s3: S3) -> None:
    versioned = s3.bucket(versioned=True)
    for name in ("a", "b", "c"):
        s3.put(versioned, f"{name}.bin", name.encode())
    plain = s3.bucket()
    s3.put_many(plain, {"x.bin": b"x", "y.bin": b"y"})

    sources = [S3Source(f"s3://{versioned}/", Limits()), S3Source(f"s3://{plain}/", Limits())]
    try:
        keys = [[u.key for u in source.units() if isinstance(u, Unit)] for source in sources]
        # After the listing: one version is destroyed, one unversioned object overwritten.
        gone = next(k for k in keys[0] if k["k"] == "b.bin")
        s3.client.delete_object(Bucket=versioned, Key="b.bin", VersionId=gone["v"])
        s3.put(plain, "x.bin", b"new content")
        results = [dict(read_all(source.walk_units(k))) for source, k in zip(sources, keys)]
    finally:
        for source in sources:
            source.close()
    first = {json.loads(k)[-1][1]: v for k, v in results[0].items()}
    assert first["a.bin"] == b"a" and first["c.bin"] == b"c"
    assert first["b.bin"].startswith("problem read: the object version was deleted after it "
                                      "was listed; not read (NoSuchVersion")
    second = {json.loads(k)[-1][1]: v for k, v in results[1].items()}
    assert second["y.bin"] == b"y"
    assert second["x.bin"].startswith("problem read: the object changed after it was listed "
                                      "(its ETag no longer matches); not read (PreconditionFailed")


def test_a_bucket_that_cannot_be_opened_fails_the_scan_with_the_reason(
        s3: S3, store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/DCIM/"
    with pytest.raises(SourceError, match="the bucket does not exist"):
        open_source(missing)
    for bad in ("s3://", "s3://Bad_Bucket/x", "s3://ab/x", "s3://10.0.0.1/x", "s3://a..b/x"):
        with pytest.raises(SourceError, match="valid S3 bucket"):
            open_source(bad)
    scan_id, thread = jobs.submit_scan(store, settings, missing)
    assert thread is not None
    thread.join(timeout=60)
    status = scan_progress(store, scan_id)
    assert status["state"] == "failed"
    assert f"{missing} (endpoint {s3.endpoint}): the bucket does not exist" in status["error"]

    bucket = s3.bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(SourceError, match="no AWS credentials found"):
        open_source(f"s3://{bucket}/")


def test_the_environment_configures_endpoint_retries_and_threads(
        s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3.bucket()
    source = S3Source(f"s3://{bucket}", Limits())
    assert source.client.meta.endpoint_url == s3.endpoint
    assert source.client.meta.config.retries == {"mode": "standard"}
    assert source.read_threads == 8 and source.client.meta.config.max_pool_connections == 10
    assert source.uri == f"s3://{bucket}/" and parse_s3_uri(source.uri) == (bucket, "")
    source.close()
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("HASHSVC_S3_READ_THREADS", "3")
    source = S3Source(f"s3://{bucket}/x/", Limits())
    assert source.client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert source.read_threads == 3 and source.client.meta.config.max_pool_connections == 5
    source.close()


# -- parallel reads ---------------------------------------------------------------------------

class GetGate:
    """Adds 50 ms of latency to every GET, counting how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started = 0

    def __call__(self, **_: Any) -> None:
        with self.lock:
            self.running += 1
            self.started += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1


@pytest.mark.parametrize("threads", [1, 4])
def test_reads_run_in_parallel_within_the_window(s3: S3, threads: int) -> None:
    bucket = s3.bucket()
    s3.put_many(bucket, {f"{i:02d}.bin": bytes([i]) * 100 for i in range(24)})
    source = S3Source(f"s3://{bucket}/", Limits(), read_threads=threads)
    gate = GetGate()
    source.client.meta.events.register("before-send.s3.GetObject", gate)
    try:
        walk = source.walk()
        first = next(walk)
        # Nothing beyond the window is fetched while the walk waits on its first item.
        time.sleep(0.2)
        assert gate.started == threads
        rest = list(walk)
        # A walk stopped part-way (a cancelled scan) waits for its reads and ends its threads.
        stopped = source.walk()
        next(stopped)
        stopped.close()
    finally:
        source.close()
    entries = [first] + [i for i in rest if isinstance(i, Entry)]
    assert [e.info.locator.links[-1].name for e in entries] == [f"{i:02d}.bin"
                                                                for i in range(24)]
    assert gate.most == threads and gate.started == 24 + threads
    assert not [t for t in threading.enumerate() if t.name.startswith("s3-read")]


# -- every way to run a scan --------------------------------------------------------------------

def test_cli_scan_of_a_bucket(s3: S3, store: Store, settings: Settings, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hashsvc.cli import main

    register(store, "CASE-1", "astronaut", "coffee")
    exhibit = versioned_exhibit(s3)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["--data-dir", settings.data_dir, "scan", exhibit.uri,
                                       "--report", str(out), "--quiet", "--workers", "1"],
                                env={"HASHSVC_DATABASE_URL": ""})
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["source"] == exhibit.uri and report["state"] == "done"
    assert {m["version_id"] for m in report["matches"]} == {exhibit.overwritten,
                                                            exhibit.deleted}
    missing = CliRunner().invoke(main, ["--data-dir", settings.data_dir, "scan",
                                        f"s3://{s3.bucket()}-gone/", "--report", str(out)],
                                 env={"HASHSVC_DATABASE_URL": ""})
    assert missing.exit_code == 1 and "the bucket does not exist" in missing.output


def test_batch_jobs_in_process_record_what_the_embedded_scan_records(
        s3: S3, store: Store, settings: Settings) -> None:
    register(store, "CASE-1", "astronaut", "coffee")
    exhibit = versioned_exhibit(s3)
    embedded = build_report(store, run_scan(store, settings, exhibit.uri))
    scan_id, thread = jobs.submit_scan(store, settings.replace(batch_files=2, redis_url=""),
                                       exhibit.uri)
    assert thread is not None
    thread.join(timeout=120)
    report = build_report(store, scan_id)
    assert summary(report) == summary(embedded) and report["matched_files"] == 2
    assert sorted(json.dumps(m["locator"]) for m in report["matches"]) == sorted(
        json.dumps(m["locator"]) for m in embedded["matches"])
    assert [e["details"]["object_versions"] for e in report["evidence"]] == [4]
    status = scan_progress(store, scan_id)
    assert status["state"] == "done" and status["batches_done"] == status["batches_total"] == 2


def test_rq_workers_scan_a_bucket(s3: S3, pg_store: Store,
                                  service_settings: Settings,  # noqa: F811 - fixture
                                  workers: WorkerPool) -> None:  # noqa: F811 - fixture
    register(pg_store, "CASE-1", "astronaut", "coffee")
    exhibit = versioned_exhibit(s3)
    workers.start(1)
    scan_id, thread = jobs.submit_scan(pg_store, service_settings, exhibit.uri)
    assert thread is None
    embedded = build_report(pg_store, run_scan(pg_store, service_settings, exhibit.uri))
    status = wait_final(pg_store, scan_id, workers)
    assert status["state"] == "done" and status["batches_total"] == 1
    report = build_report(pg_store, scan_id)
    assert summary(report) == summary(embedded)
    assert {m["version_id"] for m in report["matches"]} == {exhibit.overwritten,
                                                            exhibit.deleted}


def test_the_api_scans_allowed_buckets_only(s3: S3, settings: Settings,
                                            tmp_path: Path) -> None:
    exhibit = versioned_exhibit(s3)
    api = make_api(api_settings(settings, tmp_path,
                                s3_buckets=f"other-bucket:{exhibit.bucket},third-bucket"))
    try:
        register(api.store, "CASE-1", "astronaut", "coffee")
        started = api.call("POST", "/v1/scans", "forensic",
                           json={"source": exhibit.uri, "label": "cloud account"})
        assert started.status_code == 202, started.json
        final = wait_for_scan(api, started.json["scan_id"])
        assert final["state"] == "done" and final["source"] == exhibit.uri
        matches = api.call("GET", f"/v1/scans/{final['scan_id']}/matches", "forensic").json
        assert {(m["version_id"], m["deleted"]) for m in matches["matches"]} == {
            (exhibit.overwritten, True), (exhibit.deleted, True)}

        refused = {
            "s3://not-allowed-bucket/DCIM/": "'not-allowed-bucket' is not one this server "
                                             "may scan",
            "s3://Other_Bucket/DCIM/": "valid S3 bucket",
            f"s3://{exhibit.bucket}/DCIM/../Other/": "may not contain '..'",
            f"s3://{exhibit.bucket}/DCIM/\x1b[2J": "control characters",
        }
        for source, message in refused.items():
            response = api.call("POST", "/v1/scans", "forensic", json={"source": source})
            assert response.status_code == 400, (source, response.json)
            assert message in response.json["message"], (source, response.json)
    finally:
        api.store.close()
    closed = make_api(api_settings(settings.replace(data_dir=str(tmp_path / "closed")),
                                   tmp_path))
    try:
        response = closed.call("POST", "/v1/scans", "forensic", json={"source": exhibit.uri})
        assert response.status_code == 400 and "s3_buckets" in response.json["message"]
    finally:
        closed.store.close()


def test_action_delete_removes_exactly_the_confirmed_versions(
        s3: S3, store: Store, settings: Settings, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hashsvc.cli import main
    from hashsvc.review import Reviewer, decide

    register(store, "CASE-1", "astronaut", "coffee")
    exhibit = versioned_exhibit(s3)
    runner, env = CliRunner(), {"HASHSVC_DATABASE_URL": ""}
    base = ["--data-dir", settings.data_dir]
    out = tmp_path / "scan.json"
    assert runner.invoke(main, [*base, "scan", exhibit.uri, "--report", str(out), "--quiet",
                                "--workers", "1", "--label", "EXH-S3"], env=env).exit_code == 0
    report = json.loads(out.read_text())
    by_version = {m["version_id"]: m["match_id"] for m in report["matches"]}
    decide(store, report["scan_id"], [by_version[exhibit.overwritten]], "confirmed",
           Reviewer("DC Smith"))  # the deleted IMG_0002 version stays unconfirmed
    signed = tmp_path / "deletion.json"
    built = runner.invoke(main, [*base, "report", report["scan_id"], "--out", str(signed)],
                          env=env)
    assert built.exit_code == 0, built.output

    def versions() -> set[str]:
        listed = s3.client.list_object_versions(Bucket=exhibit.bucket)
        return {v["VersionId"] for v in listed.get("Versions", [])}

    before = versions()
    dry = runner.invoke(main, [*base, "action", "delete", str(signed)], env=env)
    assert dry.exit_code == 0, dry.output
    assert versions() == before
    plan = json.loads(dry.output)["results"]
    assert [(r["key"], r["version_id"]) for r in plan] == [("DCIM/IMG_0001.JPG",
                                                            exhibit.overwritten)]
    done = runner.invoke(main, [*base, "action", "delete", str(signed), "--execute"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["results"][0]["outcome"] == "deleted"
    assert versions() == before - {exhibit.overwritten}
    from hashsvc import audit
    actions = [e.action for e in audit.entries(store, 0, 1000)]
    assert actions.count("s3.delete") == 1 and actions.count("s3.delete.dry_run") == 1
