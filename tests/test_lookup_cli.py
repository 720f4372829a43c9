"""``hashsvc lookup``: hash lines against the embedded bank, and against a real HTTP service."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator

import pytest
from werkzeug.serving import make_server

from hashsvc.hashing import hash_bytes
from hashsvc.settings import Settings

from conftest import encode, photo
from test_api import api_settings, make_api
from test_cli import cli_env, hashsvc  # noqa: F401 (cli_env is a fixture)


def lines_of(tmp_path: Path, env: dict[str, str], names: dict[str, bytes]) -> list[str]:
    """``hashsvc hash`` lines of the given files, written under tmp_path."""
    folder = tmp_path / "files"
    folder.mkdir(exist_ok=True)
    for name, data in names.items():
        (folder / name).write_bytes(data)
    hashed = hashsvc(["hash", "--no-features", *[str(folder / n) for n in names]], env)
    assert hashed.returncode == 0, hashed.stderr
    return hashed.stdout.splitlines()


def test_lookup_against_the_embedded_bank(tmp_path: Path, cli_env: dict[str, str]) -> None:
    registered = lines_of(tmp_path, cli_env, {"a.jpg": encode(photo("astronaut"), "JPEG")})
    assert hashsvc(["register", "--case", "CASE-3", "-"], cli_env,
                   stdin="\n".join(registered)).returncode == 0
    copy, other = lines_of(tmp_path, cli_env, {
        "copy.jpg": encode(photo("astronaut").resize((256, 256)), "JPEG", quality=70),
        "other.jpg": encode(photo("coffee"), "JPEG")})
    pdq_only = json.dumps({"hashes": {"pdq": json.loads(copy)["hashes"]["pdq"]}})
    exact_only = json.dumps({"hashes": {"sha256": json.loads(registered[0])["sha256"]}})
    stdin = "\n".join([copy, other, pdq_only, exact_only, '{"hashes": {"pdq": "zz"}}',
                       "not json"])
    result = hashsvc(["lookup", "-"], cli_env, stdin=stdin)
    assert result.returncode == 1  # two bad lines, reported in place
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3, 4, 5, 6]
    assert [(m["case"], m["algorithm"]) for m in out[0]["matches"]] == [("CASE-3", "pdq")]
    assert out[0]["matches"][0]["distance"] <= 31
    assert out[1]["matches"] == []
    assert [m["case"] for m in out[2]["matches"]] == ["CASE-3"]
    assert [(m["algorithm"], m["distance"]) for m in out[3]["matches"]] == [("sha256", 0)]
    assert "64 lowercase hex" in out[4]["error"] and out[5]["error"] == "not a JSON line"


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], object]]:
    """The API served over real HTTP on loopback (one thread), with its keys."""
    api = make_api(api_settings(settings, tmp_path))
    server = make_server("127.0.0.1", 0, api.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", api.keys, api
    server.shutdown()
    api.store.close()


def test_lookup_against_a_service(tmp_path: Path, cli_env: dict[str, str],
                                  service: tuple[str, dict[str, str], object]) -> None:
    url, keys, api = service
    case = api.call("POST", "/v1/cases", "charity", json={}).json  # type: ignore[attr-defined]
    line = {"file": "a.jpg",
            **hash_bytes(encode(photo("astronaut"), "JPEG"), with_variants=True).to_json()}
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity",  # type: ignore[attr-defined]
             json=[line])
    copy, other = lines_of(tmp_path, cli_env, {
        "copy.jpg": encode(photo("astronaut").resize((256, 256)), "JPEG", quality=70),
        "other.jpg": encode(photo("coffee"), "JPEG")})
    result = hashsvc(["lookup", "-", "--url", url], {**cli_env,
                                                     "HASHSVC_API_KEY": keys["platform"]},
                     stdin="\n".join([copy, other]))
    assert result.returncode == 0, result.stderr
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(out[0]["matches"]) == 1 and out[1]["matches"] == []
    match = out[0]["matches"][0]
    assert match["match_ref"].startswith("m_") and "case" not in match
    assert case["case_ref"] not in result.stdout
    refused = hashsvc(["lookup", "-", "--url", url, "--key", keys["charity"]], cli_env,
                      stdin=copy)
    assert refused.returncode == 1 and "403" in refused.stderr

    # A platform granted bank sync keeps its own copy and gets the same answers from it.
    from hashsvc import accounts

    platform_env = {**cli_env, "HASHSVC_API_KEY": keys["platform"]}
    copy_file = tmp_path / "bank.json"
    denied = hashsvc(["sync", "--url", url, "--bank", str(copy_file)], platform_env)
    assert denied.returncode != 0 and "403" in denied.stderr
    accounts.set_bank_sync(api.store, api.orgs["platform"], True)  # type: ignore[attr-defined]
    synced = hashsvc(["sync", "--url", url, "--bank", str(copy_file)], platform_env)
    assert synced.returncode == 0, synced.stderr
    summary = json.loads(synced.stdout)
    assert summary["entries"] > 0 and summary["changes"] == summary["entries"]
    local = hashsvc(["lookup", "-", "--synced", str(copy_file)], cli_env,
                    stdin="\n".join([copy, other]))
    assert local.returncode == 0, local.stderr
    assert [json.loads(x) for x in local.stdout.splitlines()] == out
    # Nothing new: the next sync applies nothing; a withdrawal then empties the copy's answer.
    again = json.loads(hashsvc(["sync", "--url", url, "--bank", str(copy_file)],
                               platform_env).stdout)
    assert again["changes"] == 0 and again["from_cursor"] == summary["cursor"]
    api.call("POST", f"/v1/cases/{case['case_id']}/withdraw", "charity")  # type: ignore[attr-defined]
    after = json.loads(hashsvc(["sync", "--url", url, "--bank", str(copy_file)],
                               platform_env).stdout)
    assert after["entries"] == 0 and after["changes"] > 0
    gone = hashsvc(["lookup", "-", "--synced", str(copy_file)], cli_env, stdin=copy)
    assert json.loads(gone.stdout)["matches"] == []


def test_register_accepts_lines_with_only_some_hashes(tmp_path: Path,
                                                     cli_env: dict[str, str]) -> None:
    """A platform's or an older tool's lines: a PDQ alone, exact hashes alone (inside or beside
    "hashes"). Registering them again adds nothing; each is found by what it carries."""
    full = json.loads(lines_of(tmp_path, cli_env, {
        "a.jpg": encode(photo("astronaut"), "JPEG")})[0])
    other = json.loads(lines_of(tmp_path, cli_env, {"b.jpg": encode(photo("coffee"), "JPEG")})[0])
    partial = [{"hashes": {"pdq": full["hashes"]["pdq"]}},
               {"hashes": {"sha256": other["sha256"], "md5": other["md5"]}},
               {"md5": "0" * 32}]
    stdin = "\n".join(json.dumps(p) for p in partial)
    first = hashsvc(["register", "--case", "CASE-P", "-"], cli_env, stdin=stdin)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["images_added"] == 3
    again = hashsvc(["register", "--case", "CASE-P", "-"], cli_env, stdin=stdin)
    assert json.loads(again.stdout)["images_added"] == 0
    assert json.loads(again.stdout)["images_already_registered"] == 3

    found = hashsvc(["lookup", "-"], cli_env, stdin="\n".join(
        [json.dumps(full), json.dumps(other), json.dumps({"hashes": {"md5": "0" * 32}})]))
    out = [json.loads(line) for line in found.stdout.splitlines()]
    assert [(m["case"], m["algorithm"]) for m in out[0]["matches"]] == [("CASE-P", "pdq")]
    assert {m["algorithm"] for m in out[1]["matches"]} <= {"sha256", "md5"}
    assert [m["case"] for m in out[1]["matches"]] == ["CASE-P"]
    assert [m["algorithm"] for m in out[2]["matches"]] == ["md5"]

    # A line with no hash at all, or a malformed one, is refused with its line number.
    bad = hashsvc(["register", "--case", "CASE-P", "-"], cli_env,
                  stdin=json.dumps(partial[0]) + "\n" + json.dumps({"file": "x.jpg"}))
    assert bad.returncode != 0 and "line 2" in bad.stderr and "no hash" in bad.stderr
