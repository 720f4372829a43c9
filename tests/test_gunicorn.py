"""End to end through a real ``hashsvc serve`` (gunicorn) on a free loopback port: keys made
with the CLI, hashes registered, looked up and withdrawn, and (embedded) a scan run in-process."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import encode, noise_image
from test_api import REDIS_URL, hash_line


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hashsvc_command() -> list[str]:
    """The installed ``hashsvc`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("hashsvc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "hashsvc.cli"]


class Server:
    """A running ``hashsvc serve`` and a tiny JSON client for it."""

    def __init__(self, env: dict[str, str], log: Path, *extra: str) -> None:
        self.env = env
        self.base = f"http://127.0.0.1:{free_port()}"
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            hashsvc_command() + ["serve", "--bind", self.base[len("http://"):], "--workers", "2",
                                 *extra],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/v1/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"hashsvc serve did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def cli(self, *args: str) -> str:
        """Run a ``hashsvc`` command with the server's environment; its standard output."""
        done = subprocess.run(hashsvc_command() + list(args), env=self.env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def request(self, method: str, path: str, key: str | None = None, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, JSON body) of one request (each on a new connection)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers or {})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        """Stop gunicorn gracefully (SIGTERM), killing it only if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(params=["embedded", "postgresql+redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """``hashsvc serve`` on SQLite with in-process jobs, or on PostgreSQL and Redis."""
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    env.update(HASHSVC_DATA_DIR=str(tmp_path / "data"), HASHSVC_EVIDENCE_ROOTS=str(evidence),
               HASHSVC_WORKERS="1", HASHSVC_LOOKUP_REFRESH_SECONDS="0.2")
    if request.param != "embedded":
        # Plain postgresql:// as an operator would write it; emptied after the test.
        env.update(HASHSVC_DATABASE_URL=request.getfixturevalue("pg_migrated"),
                   HASHSVC_REDIS_URL=REDIS_URL)
        request.getfixturevalue("pg_store")
    running = Server(env, tmp_path / "gunicorn.log")
    yield running
    running.stop()


def test_end_to_end_through_gunicorn(server: Server, tmp_path: Path) -> None:
    org = json.loads(server.cli("admin", "create-org", "Operator"))
    assert org == {"org_id": 1, "name": "Operator"}
    admin = server.cli("admin", "create-key", "--org", "Operator", "--role", "admin")
    assert admin.startswith("hsk_")
    keys = {}
    for role in ("charity", "platform", "forensic"):  # the admin key makes the others
        status, made = server.request("POST", "/v1/orgs", admin, {"name": f"{role} org"})
        assert status == 201
        status, key = server.request("POST", "/v1/api-keys", admin,
                                     {"org_id": made["org_id"], "role": role})
        assert status == 201
        keys[role] = key["key"]

    status, ready = server.request("GET", "/v1/ready")
    assert status == 200
    assert ready["redis"] == ("ok" if "HASHSVC_REDIS_URL" in server.env else "not configured")
    assert server.request("GET", "/v1/cases/1") == (401, {
        "error": "unauthorized", "message": "send an API key as 'Authorization: Bearer KEY'"})

    status, case = server.request("POST", "/v1/cases", keys["charity"], {})
    assert status == 201
    line = hash_line(31)
    status, registered = server.request("POST", f"/v1/cases/{case['case_id']}/hashes",
                                        keys["charity"], [line])
    assert status == 200 and registered["images_added"] == 1

    query = {"hashes": [{"algorithm": "pdq", "value": line["hashes"]["pdq"]},
                        {"algorithm": "sha256", "value": line["sha256"]}]}
    deadline = time.monotonic() + 10
    while True:  # each worker refreshes its own index within 0.2 s of a lookup
        status, found = server.request("POST", "/v1/lookup", keys["platform"], query)
        assert status == 200
        if all(r["matches"] for r in found["results"]) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [r["matches"][0]["distance"] for r in found["results"]] == [0, 0]

    if "HASHSVC_REDIS_URL" not in server.env:  # in-process jobs: the scan runs in the server
        dump = Path(server.env["HASHSVC_EVIDENCE_ROOTS"]) / "dump"
        dump.mkdir()
        (dump / "copy.jpg").write_bytes(encode(noise_image(31), "JPEG", quality=90))
        status, started = server.request("POST", "/v1/scans", keys["forensic"],
                                         {"source": str(dump), "label": "exhibit 7"})
        assert status == 202
        deadline = time.monotonic() + 60
        while (scan := server.request("GET", f"/v1/scans/{started['scan_id']}",
                                      keys["forensic"])[1])["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline, scan
            time.sleep(0.2)
        assert scan["state"] == "done" and scan["candidates"] == 1
        status, matches = server.request("GET", f"/v1/scans/{started['scan_id']}/matches",
                                         keys["forensic"])
        assert [m["case"] for m in matches["matches"]] == [case["case_ref"]]

    assert server.request("POST", f"/v1/cases/{case['case_id']}/withdraw",
                          keys["charity"])[0] == 200
    status, gone = server.request("POST", "/v1/lookup", keys["platform"], query)
    assert gone["results"][1]["matches"] == []
    assert "intact" in server.cli("admin", "verify-audit")


def last_pid(access_log: Path) -> int:
    """The worker pid of the newest request in ``hashsvc serve --access-log``'s file."""
    lines = access_log.read_text().splitlines()
    return int(re.search(r" pid=<(\d+)> ", lines[-1]).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["embedded", "postgresql+redis"])
def test_a_withdrawal_stops_matching_in_every_worker_within_2_seconds(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    """With the default refresh interval: after the victim withdraws, lookups answered by
    either gunicorn worker find nothing 2 s later, and the feed shows the withdrawal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHSVC_")}
    env.update(HASHSVC_DATA_DIR=str(tmp_path / "data"), HASHSVC_WORKERS="1")
    if backend != "embedded":
        env.update(HASHSVC_DATABASE_URL=request.getfixturevalue("pg_migrated"),
                   HASHSVC_REDIS_URL=REDIS_URL)
        request.getfixturevalue("pg_store")
    access = tmp_path / "access.log"
    server = Server(env, tmp_path / "gunicorn.log", "--access-log", str(access))
    try:
        keys = {}
        for role in ("charity", "platform"):
            server.cli("admin", "create-org", f"{role} org")
            keys[role] = server.cli("admin", "create-key", "--org", f"{role} org",
                                    "--role", role)
        server.cli("admin", "bank-sync", "--org", "platform org")
        status, case = server.request("POST", "/v1/cases", keys["charity"], {})
        line = hash_line(41)
        server.request("POST", f"/v1/cases/{case['case_id']}/hashes", keys["charity"], [line])
        query = {"hashes": [{"algorithm": "pdq", "value": line["hashes"]["pdq"]},
                            {"algorithm": "sha256", "value": line["sha256"]}]}

        def lookups_until_both_workers_answer(expect_match: bool) -> set[int]:
            pids: set[int] = set()
            for _ in range(200):
                status, found = server.request("POST", "/v1/lookup", keys["platform"], query)
                assert status == 200
                pid = last_pid(access)
                matched = [bool(r["matches"]) for r in found["results"]]
                if expect_match and matched != [True, True]:
                    continue  # this worker has not refreshed since the registration yet
                assert matched == [expect_match] * 2, (pid, found)
                pids.add(pid)
                if len(pids) == 2:
                    return pids
            raise AssertionError(f"only workers {pids} answered")

        before = lookups_until_both_workers_answer(True)
        basic = base64.b64encode(f"{case['case_ref']}:{case['secret']}".encode()).decode()
        status, withdrawn = server.request("POST", "/v1/status/withdraw",
                                           headers={"Authorization": f"Basic {basic}"})
        assert status == 200 and withdrawn["state"] == "withdrawn"
        time.sleep(2.0)
        after = lookups_until_both_workers_answer(False)  # every answer, from both workers
        assert after == before

        status, feed = server.request("GET", "/v1/bank/changes?cursor=0", keys["platform"])
        assert status == 200
        ops = [c["op"] for c in feed["changes"]]
        assert ops.count("withdraw") == len(set(c["entry"] for c in feed["changes"]))
        assert "add" not in ops  # the additions' values are erased: only withdrawals remain
        assert "intact" in server.cli("admin", "verify-audit")
    finally:
        server.stop()
