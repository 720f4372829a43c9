"""Step 6 through the API: the victim's secret, status, withdrawal and consent; guessing
stopped; platforms' takedown feedback; deletion reports counted; rate limits in Redis."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from hashsvc import audit, victims
from hashsvc.api import create_app
from hashsvc.features import encode_line, extract_registered
from hashsvc.settings import Settings
from hashsvc.store.models import (BankChange, BankHash, Case, ImageFeatures, RegisteredImage)

from conftest import noise_image
from test_api import (REDIS_URL, Api, api, api_settings, eventually, hash_line,  # noqa: F401
                      lookup, make_api, new_case)


def basic(ref: str, secret: str) -> dict[str, str]:
    """The HTTP Basic header a victim's page sends."""
    token = base64.b64encode(f"{ref}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def status(api: Api, case: dict[str, Any], secret: str | None = None) -> Any:
    """GET /v1/status with the case's reference and secret."""
    return api.call("GET", "/v1/status",
                    headers=basic(case["case_ref"], secret or case["secret"]))


def last_audit(api: Api, action: str) -> Any:
    """The newest audit entry with this action."""
    entries = [e for e in audit.entries(api.store, 0, 100_000) if e.action == action]
    return entries[-1] if entries else None


def count(api: Api, query: Any) -> int:
    """One count from the store."""
    with api.store.sessions() as session:
        return int(session.execute(query).scalar() or 0)


def test_a_case_gets_a_secret_shown_once_and_stored_hashed(api: Api) -> None:
    case = new_case(api)
    secret = case["secret"]
    assert len(secret.replace("-", "")) == 25
    with api.store.sessions() as session:
        row = session.get(Case, case["case_id"])
        assert row is not None and row.secret_hash != secret and secret not in row.secret_hash
        assert row.secret_hash == victims.secret_digest(row.id, secret)
    # Never shown again, to anyone.
    shown = api.call("GET", f"/v1/cases/{case['case_id']}", "charity").json
    assert secret not in str(shown) and shown["victim_secret"] is True
    assert secret not in str(audit.entries(api.store, 0, 10_000)[-1].details)

    ok = status(api, case)
    assert ok.status_code == 200, ok.json
    assert ok.json["state"] == "active" and ok.json["active_hashes"] == 0
    # Typed by a person: lower case and without dashes is the same secret.
    assert status(api, case, secret.replace("-", "").lower()).status_code == 200
    entry = last_audit(api, "status.read")
    assert entry.target_id == str(case["case_id"]) and entry.details["outcome"] == "ok"
    assert entry.details["via"] == "victim"

    wrong = status(api, case, "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA")
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert last_audit(api, "status.read").details["denied"] == "wrong_secret"
    # An unknown reference answers exactly as a wrong secret does.
    unknown = api.call("GET", "/v1/status", headers=basic("no-such-case", secret))
    assert (unknown.status_code, unknown.json) == (401, wrong.json)
    # An API key of any role opens nothing here.
    assert api.call("GET", "/v1/status", "charity").status_code == 401

    # The charity replaces a lost secret: the old one stops working.
    new = api.call("POST", f"/v1/cases/{case['case_id']}/secret", "charity")
    assert new.status_code == 200 and new.json["secret"] != secret
    assert status(api, case).status_code == 401
    assert status(api, case, new.json["secret"]).status_code == 200
    assert api.call("POST", f"/v1/cases/{case['case_id']}/secret",
                    "charity_b").status_code == 404


def test_guessing_a_secret_locks_the_case_and_is_audited(settings: Settings,
                                                         tmp_path: Path) -> None:
    api = make_api(api_settings(settings, tmp_path, status_max_failures=3,
                                status_lockout_seconds=600))
    case = new_case(api)
    for n in range(2):
        assert status(api, case, f"WRONG-{n}").status_code == 401
    locked = status(api, case, "WRONG-2")  # the third wrong secret in a row
    assert locked.status_code == 429 and 590 <= int(locked.headers["Retry-After"]) <= 600
    lockout = last_audit(api, "status.lockout")
    assert lockout is not None and lockout.target_id == str(case["case_id"])
    # Locked: even the right secret is refused, and each refusal is audited.
    right = status(api, case)
    assert right.status_code == 429 and right.json["error"] == "locked"
    assert int(right.headers["Retry-After"]) > 0
    assert last_audit(api, "status.read").details["denied"] == "locked"
    # Withdrawal is refused too while locked.
    assert api.call("POST", "/v1/status/withdraw",
                    headers=basic(case["case_ref"], case["secret"])).status_code == 429
    # A right secret resets the count: two wrong, one right, two wrong does not lock.
    with api.store.sessions.begin() as session:
        row = session.get(Case, case["case_id"])
        row.locked_until = None  # the lockout has passed
    assert status(api, case).status_code == 200
    for n in range(2):
        assert status(api, case, f"WRONG-{n}").status_code == 401
    assert status(api, case).status_code == 200
    for n in range(2):
        assert status(api, case, f"WRONG-{n}").status_code == 401
    assert status(api, case).status_code == 200
    api.store.close()


def test_status_requests_are_rate_limited_per_address(settings: Settings,
                                                      tmp_path: Path) -> None:
    api = make_api(api_settings(settings, tmp_path, status_rate_limit="4/minute",
                                redis_url=REDIS_URL))
    case = new_case(api)
    address = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"  # Redis outlives runs
    codes = [api.call("GET", "/v1/status", headers=basic(f"guess-{n}", "X"),
                      environ_base={"REMOTE_ADDR": address}).status_code
             for n in range(6)]
    # A minute boundary between requests restarts the count; at most once in 6 requests.
    assert codes[0] == 401 and 429 in codes, codes
    limited = api.call("GET", "/v1/status", headers=basic(case["case_ref"], case["secret"]),
                       environ_base={"REMOTE_ADDR": address})
    if limited.status_code == 429:  # not just past a minute boundary
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.json["error"] == "rate_limited"
    entry = last_audit(api, "rate_limit")
    assert entry is not None and entry.details["counted_as"] == "address"
    assert entry.details["path"] == "/v1/status"
    # Another address has its own count.
    assert status(api, case).status_code == 200
    api.store.close()


def test_api_key_limits_are_shared_through_redis(settings: Settings, tmp_path: Path) -> None:
    """Two apps (as two gunicorn workers would be) count one key's requests together."""
    limited = api_settings(settings, tmp_path, rate_limit_per_minute=4, redis_url=REDIS_URL)
    first = make_api(limited)
    second = create_app(limited)  # the same store and keys, its own process state
    key = first.keys["platform"]
    body = {"hashes": [{"algorithm": "pdq", "value": "0" * 64}]}
    codes = []
    for n in range(8):
        client = first.client if n % 2 == 0 else second.test_client()
        response = client.post("/v1/lookup", json=body,
                               headers={"Authorization": f"Bearer {key}"})
        codes.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json["error"] == "rate_limited"
    # Four allowed per minute across both apps (a minute boundary may restart the count once).
    assert codes[:4] == [200] * 4 or codes.count(429) >= 2, codes
    assert codes.count(429) >= 2, codes
    entry = last_audit(first, "rate_limit")
    assert entry is not None and entry.key_id is not None and entry.details["counted_as"] == "key"
    first.store.close()
    second.extensions["hashsvc"].store.close()


def test_the_victim_withdraws_and_everything_registered_is_erased(api: Api) -> None:
    case = new_case(api, features_consent=True)
    lines = [hash_line(61), hash_line(62)]
    lines[0]["features"] = encode_line(extract_registered(noise_image(61)))
    path = f"/v1/cases/{case['case_id']}"
    assert api.call("POST", path + "/hashes", "charity", json=lines).status_code == 200
    query = [{"algorithm": "pdq", "value": lines[0]["hashes"]["pdq"]}]
    assert eventually(lambda: lookup(api, query).json["results"][0]["matches"])
    before = status(api, case).json
    assert before["images"] == 2 and before["active_hashes"] > 2
    assert count(api, select(func.count()).select_from(ImageFeatures)) == 1

    done = api.call("POST", "/v1/status/withdraw",
                    json={"case_ref": case["case_ref"], "secret": case["secret"]})
    assert done.status_code == 200, done.json
    assert done.json["state"] == "withdrawn" and done.json["images_withdrawn"] == 2
    assert done.json["active_hashes"] == 0
    # Stops matching within the refresh window (0.2 s here; 1 s by default).
    assert eventually(lambda: lookup(api, query).json["results"][0]["matches"] == [],
                      timeout=2.0)
    # Erased but for the tombstone: the case row (id, reference, times) and the change log's
    # entries, which keep ids and times and no hash value.
    assert count(api, select(func.count()).select_from(RegisteredImage)) == 0
    assert count(api, select(func.count()).select_from(BankHash)) == 0
    assert count(api, select(func.count()).select_from(ImageFeatures)) == 0
    with api.store.sessions() as session:
        tomb = session.get(Case, case["case_id"])
        assert tomb is not None and tomb.withdrawn_at is not None
        ops = session.execute(select(BankChange.op, func.count())
                              .group_by(BankChange.op)).all()
    added, removed = dict(ops)["add"], dict(ops)["remove"]
    assert added == removed
    assert all(c.value is None for c in api.store.bank_changes(0))
    entry = last_audit(api, "status.withdraw")
    assert entry.target_id == str(case["case_id"]) and entry.details["images_withdrawn"] == 2
    # The victim still sees the state; repeating changes nothing; registering is refused.
    again = api.call("POST", "/v1/status/withdraw", headers=basic(case["case_ref"],
                                                                   case["secret"]))
    assert again.status_code == 200 and again.json["images_withdrawn"] == 0
    assert api.call("POST", path + "/hashes", "charity", json=lines).status_code == 409


def test_local_features_need_consent_and_withdrawing_it_erases_them(api: Api) -> None:
    line = hash_line(71)
    line["features"] = encode_line(extract_registered(noise_image(71)))
    features = select(func.count()).select_from(ImageFeatures)

    no = new_case(api)  # consent defaults to no: only hashes are stored
    api.call("POST", f"/v1/cases/{no['case_id']}/hashes", "charity", json=[line])
    assert count(api, features) == 0
    assert status(api, no).json["features_consent"] is False

    yes = new_case(api, features_consent=True)
    assert yes["features_consent"] is True
    api.call("POST", f"/v1/cases/{yes['case_id']}/hashes", "charity", json=[line])
    assert count(api, features) == 1
    hashes = status(api, yes).json["active_hashes"]

    answer = api.call("POST", "/v1/status/consent", json={
        "case_ref": yes["case_ref"], "secret": yes["secret"], "features": False})
    assert answer.status_code == 200, answer.json
    assert answer.json["features_erased"] == 1 and answer.json["features_consent"] is False
    assert count(api, features) == 0  # at once, not at the next refresh
    assert answer.json["active_hashes"] == hashes  # the hashes stay
    assert last_audit(api, "status.consent").details["features_erased"] == 1
    # Registering again without consent stores no features.
    api.call("POST", f"/v1/cases/{yes['case_id']}/hashes", "charity",
             json=[{**hash_line(72), "features": line["features"]}])
    assert count(api, features) == 0
    # The charity can record consent again (the victim asked); later features are kept.
    given = api.call("POST", f"/v1/cases/{yes['case_id']}/consent", "charity",
                     json={"features": True})
    assert given.status_code == 200 and given.json["features_consent"] is True
    api.call("POST", f"/v1/cases/{yes['case_id']}/hashes", "charity",
             json=[{**hash_line(73), "features": line["features"]}])
    assert count(api, features) == 1
    assert api.call("POST", f"/v1/cases/{yes['case_id']}/consent", "charity",
                    json={"features": "no"}).status_code == 400


def test_takedown_feedback_reaches_the_victims_status(api: Api) -> None:
    case = new_case(api)
    lines = [hash_line(81), hash_line(82)]
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=lines)
    queries = [{"algorithm": "pdq", "value": line["hashes"]["pdq"]} for line in lines]
    def both_found() -> Any:
        results = lookup(api, queries).json["results"]
        return all(r["matches"] for r in results) and results

    found = eventually(both_found)
    assert found
    refs = [r["matches"][0]["match_ref"] for r in found]
    other = lookup(api, queries[:1], "platform_b").json["results"][0]["matches"][0]["match_ref"]
    seen = status(api, case).json
    assert seen["platform_matches"] == 3
    assert {p["platform"]: p["matches"] for p in seen["platforms"]} == {
        "platform_a org": 2, "platform_b org": 1}

    def feedback(ref: str, outcome: str, who: str = "platform") -> Any:
        return api.call("POST", "/v1/feedback", who, json={"match_ref": ref, "outcome": outcome})

    assert feedback(refs[0], "appealed").status_code == 201
    assert feedback(refs[0], "removed").status_code == 201  # the latest outcome counts
    assert feedback(refs[1], "not_found").status_code == 201
    assert feedback(other, "removed", "platform_b").status_code == 201
    # A reference made for another platform is unknown to this one, as is a made-up one.
    assert feedback(other, "removed").status_code == 404
    assert feedback("m_" + "f" * 32, "removed").status_code == 404
    assert feedback(refs[0], "deleted").status_code == 400
    assert feedback(refs[0][:-1], "removed").status_code == 404
    entry = last_audit(api, "feedback")
    assert entry.details["outcome"] == "not_found" or entry.details["status"] in (400, 404)

    seen = status(api, case).json
    assert seen["takedowns"] == {"removed": 2, "not_found": 1, "appealed": 0}
    by_name = {p["platform"]: p for p in seen["platforms"]}
    assert by_name["platform_a org"]["outcomes"] == {"removed": 1, "not_found": 1,
                                                     "appealed": 0}
    assert by_name["platform_b org"]["outcomes"]["removed"] == 1
    # Nothing of the matches themselves reaches the victim: no references, no hashes.
    assert not any(r in str(seen) for r in refs + [other])
    assert lines[0]["hashes"]["pdq"] not in str(seen)
    # The charity's view does not show platforms (it has its own endpoints).
    assert "platforms" not in api.call("GET", f"/v1/cases/{case['case_id']}", "charity").json


def test_deletion_reports_are_counted_in_the_status(api: Api) -> None:
    case = new_case(api)
    other = new_case(api)
    assert victims.record_issued_report(api.store, "r-1", "scan-1", "0" * 64,
                                        [case["case_ref"], case["case_ref"]]) == 1
    victims.record_issued_report(api.store, "r-1", "scan-1", "0" * 64, [case["case_ref"]])
    # The same exhibit's report issued again (or in another format) is one report to the
    # victim; another exhibit's is another.
    victims.record_issued_report(api.store, "r-2", "scan-1", "1" * 64, [case["case_ref"]])
    assert status(api, case).json["deletion_reports"] == 1
    victims.record_issued_report(api.store, "r-3", "scan-2", "2" * 64,
                                 [case["case_ref"], other["case_ref"]])
    assert status(api, case).json["deletion_reports"] == 2
    assert status(api, other).json["deletion_reports"] == 1


@pytest.mark.parametrize("bad", [
    {"features": "false"}, {"features": None}, {}])
def test_victim_consent_needs_a_boolean(api: Api, bad: dict[str, Any]) -> None:
    case = new_case(api)
    response = api.call("POST", "/v1/status/consent",
                        json={"case_ref": case["case_ref"], "secret": case["secret"], **bad})
    assert response.status_code == 400


def test_a_locked_case_recovers_when_the_lockout_ends(settings: Settings,
                                                      tmp_path: Path) -> None:
    api = make_api(api_settings(settings, tmp_path, status_max_failures=1,
                                status_lockout_seconds=1))
    case = new_case(api)
    assert status(api, case, "WRONG").status_code == 429
    assert status(api, case).status_code == 429
    time.sleep(1.2)
    assert status(api, case).status_code == 200
    api.store.close()
