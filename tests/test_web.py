"""The web pages (hashsvc/web): headers, CSRF, sign-in and roles, one-time intake codes and the
audit trail through Flask's test client; then each audience's pages end to end in a real
headless Chromium (Debian's, driven by Playwright for Python) on a loopback server.

The browser tests assert that registering photos through the intake page sends no image
bytes (every request goes to the loopback server, every body is small JSON of hash lines) and
that the hashes made in the browser equal Python's within the match threshold; that a victim
sees and withdraws a case; that an analyst starts a scan, watches it finish, confirms a
candidate and downloads the signed deletion report (PDF and JSON, the signature checked);
that an operator makes a key and checks the audit chain; and that the forms added beside the
API's operations (a new secret, the victim's consent, cancelling a scan, a wipe record) work,
the first two with JavaScript turned off. They save screenshots into
docs/screenshots/ (docs/web.md shows them).
"""

from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update

from browser import SCREENSHOTS
from conftest import encode, noise_image, photo
from hashsvc import accounts, audit, intake
from hashsvc.hashing import hamming_hex, hash_bytes
from hashsvc.signing import verify_document
from hashsvc.store.models import BankHash, Case, IntakeLink, RegisteredImage, utcnow
from hashsvc.web import CSP
from test_api import Api, api_settings, hash_line, make_api, new_case, wait_for_scan

#: The pages anyone may open.
PUBLIC_PAGES = ("/", "/intake", "/status", "/signin")


@pytest.fixture
def web(settings: Any, tmp_path: Path) -> Iterator[Api]:
    """The app (API and pages) on the embedded store, one org and key per role and side."""
    made = make_api(api_settings(settings, tmp_path))
    yield made
    made.store.close()


def csrf(client: FlaskClient, path: str = "/signin") -> str:
    """The session's CSRF token, as a page's form carries it."""
    page = client.get(path)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found, path
    return found.group(1)


def signed_in(api: Api, who: str) -> FlaskClient:
    """A client signed in with the key of ``who``."""
    client = api.app.test_client()
    response = client.post("/signin", data={"key": api.keys[who], "csrf_token": csrf(client)})
    assert response.status_code == 303, response.get_data(as_text=True)
    return client


def last_entry(api: Api, action: str | None = None) -> Any:
    """The newest audit entry (of ``action``)."""
    rows = audit.entries(api.store, 0, 100_000)
    if action is not None:
        rows = [e for e in rows if e.action == action]
    assert rows, action
    return rows[-1]


#: The page each signed-in role can read a CSRF token from.
TOKEN_PAGES = {"charity": "/charity/cases", "charity_b": "/charity/cases",
               "forensic": "/analyst/scans", "forensic_b": "/analyst/scans"}


def assert_refused(web: Any, client: Any, path: str, action: str, other: str,
                   wrong_role: str) -> None:
    """A confirmed page action is refused without a CSRF token or with a forged one (form or
    header), for the same role of another org (404, audited as other_org) and for another
    role (403, audited as denied)."""
    assert client.post(path, data={"confirm": "yes"}).status_code == 403
    assert client.post(path, data={"confirm": "yes", "csrf_token": "forged"}
                       ).status_code == 403
    assert client.post(path, data={"confirm": "yes"}, headers={"X-CSRF-Token": "forged"}
                       ).status_code == 403
    stranger = signed_in(web, other)
    assert stranger.post(path, data={"confirm": "yes", "csrf_token": csrf(
        stranger, TOKEN_PAGES[other])}).status_code == 404
    entry = last_entry(web, action)
    assert (entry.org_id, entry.details["denied"], entry.details["outcome"]) == (
        web.orgs[other], "other_org", "denied")
    wrong = signed_in(web, wrong_role)
    assert wrong.post(path, data={"confirm": "yes", "csrf_token": csrf(
        wrong, TOKEN_PAGES[wrong_role])}).status_code == 403
    assert last_entry(web, action).details["outcome"] == "denied"


def intake_link(api: Api, case_id: int, who: str = "charity") -> dict[str, Any]:
    """A one-time link for a case, made through the API."""
    response = api.call("POST", f"/v1/cases/{case_id}/intake-links", who)
    assert response.status_code == 201, response.json
    return response.json


def assert_clean_page(html: str) -> None:
    """A page CSP would not trip over (no inline script or style, no handler attributes,
    nothing from elsewhere) whose every input is labelled."""
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)
    assert not re.search(r"(src|href|action)=\"(https?:)?//", html)
    for ident in re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|submit)")'
                            r'[^>]*\bid="([^"]+)"', html):
        assert f'for="{ident}"' in html, ident


def form_fields(html: str, form_id: str) -> dict[str, str]:
    """The hidden fields of the form with this id, as the browser would send them."""
    found = re.search(rf'<form[^>]*\bid="{form_id}"[^>]*>(.*?)</form>', html, re.S)
    assert found, form_id
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                           found.group(1)))


def count_entries(api: Api, action: str) -> int:
    """How many audit entries of ``action`` there are."""
    return sum(1 for e in audit.entries(api.store, 0, 100_000) if e.action == action)


def assert_same_audit(page_entry: Any, api_entry: Any) -> None:
    """The page's audit entry is the API's: the same action, caller and target, and the same
    details but for the HTTP status, the channel ("via") and the client address."""
    def fields(entry: Any) -> tuple[Any, ...]:
        return (entry.action, entry.org_id, entry.key_id, entry.target_type, entry.target_id)

    def details(entry: Any) -> dict[str, Any]:
        return {k: v for k, v in entry.details.items() if k not in ("status", "via", "address")}

    assert page_entry.seq != api_entry.seq
    assert fields(page_entry) == fields(api_entry)
    assert details(page_entry) == details(api_entry)
    assert page_entry.details["via"] == "web" and api_entry.details.get("via") != "web"


# -- pages, headers, CSRF ----------------------------------------------------------------------

def test_pages_carry_the_security_headers_and_no_inline_code(web: Api) -> None:
    for path in PUBLIC_PAGES:
        response = web.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
        html = response.get_data(as_text=True)
        assert '<html lang="en">' in html and re.search(r"<title>[^<]+</title>", html)
        # Nothing CSP would block: no inline script or style, no handler attributes, nothing
        # from elsewhere.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), path
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), path
        assert not re.search(r"(src|href|action)=\"(https?:)?//", html), path
        # Every input is labelled.
        for ident in re.findall(r'<(?:input|select|textarea)(?![^>]*type="(?:hidden|submit)")'
                                r'[^>]*\bid="([^"]+)"', html):
            assert f'for="{ident}"' in html, (path, ident)
    for name in ("web.css", "intake.js", "progress.js", "scan.js", "hashing.js"):
        asset = web.client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["X-Content-Type-Options"] == "nosniff"
    assert "cdn" not in web.client.get("/intake").get_data(as_text=True).lower()
    # The API is unchanged: JSON errors, no cookie.
    response = web.client.get("/v1/cases")
    assert response.status_code == 401 and response.is_json
    assert "Set-Cookie" not in response.headers


def test_csrf_token_is_required_on_every_post(web: Api) -> None:
    client = web.app.test_client()
    token = csrf(client)
    for data in ({"key": web.keys["charity"]},
                 {"key": web.keys["charity"], "csrf_token": "forged"}):
        response = client.post("/signin", data=data)
        assert response.status_code == 403, data
        assert "security token" in response.get_data(as_text=True)
    # The right token from a page of another site is refused too.
    response = client.post("/signin", data={"key": web.keys["charity"], "csrf_token": token},
                           headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    caseworker = signed_in(web, "charity")
    before = caseworker.get("/charity/cases").get_data(as_text=True)
    assert caseworker.post("/charity/cases", data={"case_ref": "NO-TOKEN"}).status_code == 403
    assert caseworker.post("/charity/cases", data={"case_ref": "NO-TOKEN"},
                           headers={"X-CSRF-Token": "wrong"}).status_code == 403
    with web.store.sessions() as session:
        assert session.execute(select(Case).where(Case.ref == "NO-TOKEN")).first() is None
    token = re.search(r'name="csrf_token" value="([^"]+)"', before).group(1)
    made = caseworker.post("/charity/cases", data={"case_ref": "WITH-TOKEN"},
                           headers={"X-CSRF-Token": token})
    assert made.status_code == 200 and "WITH-TOKEN" in made.get_data(as_text=True)
    # The victims' forms are protected the same way.
    assert client.post("/status", data={"case_ref": "x", "secret": "y"}).status_code == 403


def test_sign_in_keeps_only_the_key_id_and_signs_out(web: Api) -> None:
    client = web.app.test_client()
    token = csrf(client)
    wrong = client.post("/signin", data={"key": web.keys["charity"][:-3] + "AAA",
                                         "csrf_token": token})
    assert wrong.status_code == 401 and "not valid" in wrong.get_data(as_text=True)
    entry = last_entry(web, "web.signin")
    assert entry.details["outcome"] == "denied" and entry.details["key_prefix"]
    platform = client.post("/signin", data={"key": web.keys["platform"], "csrf_token": token})
    assert platform.status_code == 403 and "Platform keys" in platform.get_data(as_text=True)

    ok = client.post("/signin", data={"key": web.keys["charity"], "csrf_token": token,
                                      "next": "/charity/cases?offset=0"})
    assert ok.status_code == 303 and ok.headers["Location"] == "/charity/cases?offset=0"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    import base64

    payload = json.loads(base64.urlsafe_b64decode(value.split(".")[0] + "=="))
    assert set(payload) == {"key_id", "at", "csrf"}  # the key itself is never in the cookie
    assert web.keys["charity"] not in cookie
    entry = last_entry(web, "web.signin")
    assert (entry.details["outcome"], entry.org_id) == ("ok", web.orgs["charity"])
    assert client.get("/charity/cases").status_code == 200
    # An off-site "next" is ignored.
    other = web.app.test_client()
    response = other.post("/signin", data={"key": web.keys["admin"], "csrf_token": csrf(other),
                                           "next": "//evil.example/"})
    assert response.headers["Location"] == "/admin/orgs"

    token = csrf(client, "/charity/cases")
    out = client.post("/signout", data={"csrf_token": token})
    assert out.status_code == 303 and out.headers["Location"] == "/"
    assert last_entry(web, "web.signout").key_id is not None
    again = client.get("/charity/cases")
    assert again.status_code == 303 and again.headers["Location"].startswith("/signin")

    # Over https the cookie is Secure.
    secure = web.app.test_client()
    page = secure.get("/signin", base_url="https://localhost")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))[1]
    response = secure.post("/signin", base_url="https://localhost",
                           data={"key": web.keys["admin"], "csrf_token": token})
    assert "Secure" in response.headers["Set-Cookie"]


def test_each_role_sees_only_its_pages_and_a_revoked_key_is_signed_out(web: Api) -> None:
    homes = {"charity": "/charity/cases", "forensic": "/analyst/scans", "admin": "/admin/orgs"}
    actions = {"charity": "case.list", "forensic": "scan.list", "admin": "orgs.list"}
    for role, home in homes.items():
        client = signed_in(web, role)
        for other, page in homes.items():
            response = client.get(page)
            assert response.status_code == (200 if other == role else 403), (role, page)
            entry = last_entry(web)
            assert entry.action == actions[other] and entry.details["via"] == "web"
            assert entry.details["outcome"] == ("ok" if other == role else "denied")
            assert entry.org_id == web.orgs[role]
    # Not signed in: the pages send to the sign-in form, the JSON routes answer 401.
    anonymous = web.app.test_client()
    for page in homes.values():
        response = anonymous.get(page)
        assert response.status_code == 303 and "/signin?next=" in response.headers["Location"]
    assert anonymous.get("/analyst/scans/x/progress.json").status_code == 401

    new = accounts.create_key(web.store, web.orgs["forensic"], "forensic")
    client = web.app.test_client()
    client.post("/signin", data={"key": new.key, "csrf_token": csrf(client)})
    assert client.get("/analyst/scans").status_code == 200
    accounts.revoke_key(web.store, new.key_id)
    response = client.get("/analyst/scans")
    assert response.status_code == 303 and "expired=1" in response.headers["Location"]
    assert client.get("/analyst/scans").headers["Location"].startswith("/signin")


# -- one-time intake codes -----------------------------------------------------------------------

def test_intake_code_registers_once(web: Api) -> None:
    case = new_case(web)
    link = intake_link(web, case["case_id"])
    assert link["url"] == f"/intake#code={link['code']}" and len(link["code"]) == 35
    entry = last_entry(web, "case.intake_link")
    assert entry.target_id == str(case["case_id"])
    assert link["code"] not in json.dumps(entry.details)  # the code is never logged
    with web.store.sessions() as session:
        row = session.execute(select(IntakeLink)).scalar_one()
        assert row.code_hash == intake.code_digest(link["code"]) and row.used_at is None
        assert row.code_hash != link["code"]

    lines = [hash_line(1), {**hash_line(2), "file": "photo 2", "hashed_in": "browser"}]
    bad = web.client.post("/v1/intake", json={"code": link["code"], "lines": [{"hashes": 5}]})
    assert bad.status_code == 400 and bad.json["index"] == 0  # checked as the API checks
    wrong = web.client.post("/v1/intake", json={"code": "AAAAA-" + link["code"][6:],
                                                "lines": lines})
    assert wrong.status_code == 401 and wrong.json["error"] == "unauthorized"
    elsewhere = web.client.post("/v1/intake", json={"code": link["code"], "lines": lines},
                                headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    # A lower-case code with spaces is the same code.
    done = web.client.post("/v1/intake", json={"code": link["code"].lower().replace("-", " "),
                                               "lines": lines})
    assert done.status_code == 200, done.json
    assert done.json == {"images_added": 2, "images_already_registered": 0, "hashes_added": 24,
                         "lines_with_errors_skipped": 0}
    entry = last_entry(web, "intake.register")
    assert (entry.target_id, entry.details["outcome"]) == (str(case["case_id"]), "ok")
    assert entry.org_id is None and entry.details["via"] == "intake"
    again = web.client.post("/v1/intake", json={"code": link["code"], "lines": lines})
    assert again.status_code == 410 and "used" in again.json["message"]
    assert last_entry(web, "intake.register").details["denied"] == "used_code"
    assert web.call("GET", f"/v1/cases/{case['case_id']}", "charity").json["images"] == 2

    # Expired codes are refused; a withdrawn case takes no more hashes.
    late = intake_link(web, case["case_id"])
    with web.store.sessions.begin() as session:
        session.execute(update(IntakeLink).where(IntakeLink.code_hash == intake.code_digest(
            late["code"])).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = web.client.post("/v1/intake", json={"code": late["code"], "lines": lines})
    assert expired.status_code == 410 and "expired" in expired.json["message"]
    fresh = intake_link(web, case["case_id"])
    web.call("POST", f"/v1/cases/{case['case_id']}/withdraw", "charity")
    assert web.client.post("/v1/intake", json={"code": fresh["code"], "lines": lines}
                           ).status_code == 409
    assert web.call("POST", f"/v1/cases/{case['case_id']}/intake-links", "charity"
                    ).status_code == 409
    # Only the case's own charity makes links; no code at all is a 401.
    other = new_case(web)
    assert web.call("POST", f"/v1/cases/{other['case_id']}/intake-links", "charity_b"
                    ).status_code == 404
    assert web.client.post("/v1/intake", json={"lines": lines}).status_code == 401


def test_using_a_code_is_atomic(web: Api) -> None:
    case = new_case(web)
    link = intake_link(web, case["case_id"])
    check = intake.check_code(web.store, link["code"])
    assert check.case_id == case["case_id"] and check.link_id is not None
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        intake.use_link(web.store, check.link_id))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    intake.release_link(web.store, check.link_id)  # a failed registration gives it back
    assert intake.check_code(web.store, link["code"]).case_id == case["case_id"]


# -- caseworkers' and victims' pages -------------------------------------------------------------

def test_caseworker_opens_a_case_and_makes_a_link(web: Api) -> None:
    client = signed_in(web, "charity")
    token = csrf(client, "/charity/cases")
    made = client.post("/charity/cases", data={"case_ref": "RPH-2026-7", "csrf_token": token})
    html = made.get_data(as_text=True)
    secret = re.search(r'id="victim-secret">([^<]+)<', html)[1]
    assert made.status_code == 200 and made.headers["Cache-Control"] == "no-store"
    entry = last_entry(web, "case.create")
    assert entry.details["via"] == "web" and secret not in json.dumps(entry.details)
    case_id = int(entry.target_id)
    taken = client.post("/charity/cases", data={"case_ref": "RPH-2026-7", "csrf_token": token})
    assert taken.status_code == 409 and 'aria-invalid="true"' in taken.get_data(as_text=True)
    # The secret opens the victim's status.
    assert web.client.get("/v1/status", auth=("RPH-2026-7", secret)).status_code == 200

    page = client.get(f"/charity/cases/{case_id}")
    assert page.status_code == 200 and "RPH-2026-7" in page.get_data(as_text=True)
    assert last_entry(web).action == "case.read"
    linked = client.post(f"/charity/cases/{case_id}/intake-link", data={"csrf_token": token})
    url = re.search(r'id="intake-link">([^<]+)<', linked.get_data(as_text=True))[1]
    assert url.startswith("http://localhost/intake#code=")
    code = url.split("#code=")[1]
    assert last_entry(web).action == "case.intake_link"
    assert web.client.post("/v1/intake", json={"code": code, "lines": [hash_line(3)]}
                           ).status_code == 200
    # Another charity cannot see it.
    assert signed_in(web, "charity_b").get(f"/charity/cases/{case_id}").status_code == 404
    assert last_entry(web).details["denied"] == "other_org"


def test_victim_status_page_withdraws_after_confirmation(web: Api) -> None:
    case = new_case(web, case_ref="VIC-1")
    web.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=[hash_line(4)])
    client = web.app.test_client()
    token = csrf(client, "/status")
    shown = client.post("/status", data={"case_ref": "VIC-1", "secret": case["secret"],
                                         "csrf_token": token})
    html = shown.get_data(as_text=True)
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    assert 'id="case-images">1<' in html and "Withdraw my case" in html
    entry = last_entry(web, "status.read")
    assert (entry.details["via"], entry.details["outcome"]) == ("web", "ok")

    wrong = client.post("/status", data={"case_ref": "VIC-1", "secret": "nope",
                                         "csrf_token": token})
    assert wrong.status_code == 401 and "do not match" in wrong.get_data(as_text=True)
    assert last_entry(web, "status.read").details["denied"] == "wrong_secret"

    confirm = client.post("/status/withdraw", data={"case_ref": "VIC-1",
                                                    "secret": case["secret"],
                                                    "csrf_token": token})
    assert confirm.status_code == 200 and "cannot be undone" in confirm.get_data(as_text=True)
    assert web.call("GET", f"/v1/cases/{case['case_id']}", "charity").json["state"] == "active"
    done = client.post("/status/withdraw", data={"case_ref": "VIC-1", "secret": case["secret"],
                                                 "confirm": "yes", "csrf_token": token})
    assert done.status_code == 200 and 'id="withdrawn-message"' in done.get_data(as_text=True)
    assert web.call("GET", f"/v1/cases/{case['case_id']}", "charity").json["state"] == \
        "withdrawn"
    entry = last_entry(web, "status.withdraw")
    assert (entry.details["via"], entry.details["images_withdrawn"]) == ("web", 1)

    # The lockout of the API applies to the page too.
    other = new_case(web, case_ref="VIC-2")
    for _ in range(web.settings.status_max_failures):
        client.post("/status", data={"case_ref": "VIC-2", "secret": "x", "csrf_token": token})
    locked = client.post("/status", data={"case_ref": "VIC-2", "secret": other["secret"],
                                          "csrf_token": token})
    assert locked.status_code == 429 and locked.headers["Retry-After"]
    assert "locked" in locked.get_data(as_text=True)


def test_status_form_is_rate_limited_per_address(settings: Any, tmp_path: Path) -> None:
    api = make_api(api_settings(settings, tmp_path, status_rate_limit="3/minute"))
    try:
        client = api.app.test_client()
        token = csrf(client, "/status")
        codes = [client.post("/status", data={"case_ref": "X", "secret": "y",
                                              "csrf_token": token}).status_code
                 for _ in range(4)]
        assert codes[:1] == [401] and 429 in codes
        assert api.client.get("/status").status_code == 200  # the form itself is not limited
    finally:
        api.store.close()


def test_caseworker_gives_the_victim_a_new_secret_after_confirmation(web: Api) -> None:
    case = new_case(web, case_ref="SECRET-1")
    old = case["secret"]
    path = f"/charity/cases/{case['case_id']}/secret"
    client = signed_in(web, "charity")
    page = client.get(f"/charity/cases/{case['case_id']}").get_data(as_text=True)
    assert_clean_page(page)
    assert f'action="{path}"' in page and "Give the victim a new secret" in page
    token = csrf(client, f"/charity/cases/{case['case_id']}")

    def old_secret_works() -> bool:
        return web.client.get("/v1/status", auth=("SECRET-1", old)).status_code == 200

    # Refused without the token, for another charity (404, as an unknown case) and for
    # another role; none of them changes the secret.
    assert_refused(web, client, path, "case.secret", other="charity_b", wrong_role="forensic")
    assert old_secret_works()

    # The first press only asks; nothing changes and nothing is audited yet.
    entries = count_entries(web, "case.secret")
    asked = client.post(path, data={"csrf_token": token})
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "stops working at once" in html
    assert_clean_page(html)
    assert 'id="victim-secret"' not in html
    assert form_fields(html, "confirm-form") == {"csrf_token": token, "confirm": "yes"}
    assert old_secret_works()
    assert count_entries(web, "case.secret") == entries

    # A case locked by wrong guesses is unlocked by the new secret.
    for _ in range(web.settings.status_max_failures):
        web.client.get("/v1/status", auth=("SECRET-1", "wrong"))
    assert web.client.get("/v1/status", auth=("SECRET-1", old)).status_code == 429
    made = client.post(path, data={"csrf_token": token, "confirm": "yes"})
    html = made.get_data(as_text=True)
    assert made.status_code == 200 and made.headers["Cache-Control"] == "no-store"
    secret = re.search(r'id="victim-secret">([^<]+)<', html)[1]
    assert secret != old and len(secret) == 29
    assert web.client.get("/v1/status", auth=("SECRET-1", secret)).status_code == 200
    assert web.client.get("/v1/status", auth=("SECRET-1", old)).status_code == 401
    entry = last_entry(web, "case.secret")
    assert (entry.target_id, entry.org_id, entry.details["outcome"]) == (
        str(case["case_id"]), web.orgs["charity"], "ok")
    assert secret not in json.dumps(entry.details) and old not in json.dumps(entry.details)
    # Shown once: the case's page does not show it again.
    assert secret not in client.get(f"/charity/cases/{case['case_id']}").get_data(as_text=True)

    # The API's operation leaves the same entry.
    assert web.call("POST", f"/v1/cases/{case['case_id']}/secret", "charity").status_code == 200
    assert_same_audit(entry, last_entry(web, "case.secret"))


def test_victim_gives_and_withdraws_consent_on_the_status_page(web: Api) -> None:
    from hashsvc.features import encode_line, extract_registered
    from hashsvc.store.models import ImageFeatures

    line = {**hash_line(91), "features": encode_line(extract_registered(noise_image(91)))}
    case = new_case(web, case_ref="CONSENT-1", features_consent=True)
    web.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=[line])

    def kept() -> tuple[bool, int]:
        """The case's consent and how many features the bank holds."""
        with web.store.sessions() as session:
            consent = session.get(Case, case["case_id"]).features_consent
            count = len(session.execute(select(ImageFeatures)).all())
        return bool(consent), count

    assert kept() == (True, 1)
    client = web.app.test_client()
    token = csrf(client, "/status")
    shown = client.post("/status", data={"case_ref": "CONSENT-1", "secret": case["secret"],
                                         "csrf_token": token}).get_data(as_text=True)
    assert_clean_page(shown)
    assert 'id="case-consent">Kept' in shown
    form = form_fields(shown, "consent-form")
    assert form == {"csrf_token": token, "case_ref": "CONSENT-1", "secret": case["secret"],
                    "features": "no"}

    # Refused without the token, and with a wrong secret or another case's secret; the
    # refusals are audited like the API's and change nothing.
    assert client.post("/status/consent", data={**form, "csrf_token": ""}).status_code == 403
    assert client.post("/status/consent", data={k: v for k, v in form.items()
                                                if k != "csrf_token"}).status_code == 403
    wrong = client.post("/status/consent", data={**form, "secret": "nope"})
    assert wrong.status_code == 401 and "do not match" in wrong.get_data(as_text=True)
    entry = last_entry(web, "status.consent")
    assert (entry.details["denied"], entry.details["via"]) == ("wrong_secret", "web")
    other = new_case(web, case_ref="CONSENT-2", features_consent=True)
    assert client.post("/status/consent", data={**form, "secret": other["secret"]}
                       ).status_code == 401
    assert client.post("/status/consent", data={**form, "features": "maybe"}).status_code == 400
    assert last_entry(web, "status.consent").details["outcome"] == "refused"
    assert kept() == (True, 1)

    # Withdrawing erases the features at once; the hashes stay.
    done = client.post("/status/consent", data=form)
    html = done.get_data(as_text=True)
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    assert 'id="consent-message"' in html
    assert "features of 1 photo were erased" in html and 'id="case-consent">Not kept' in html
    assert 'id="case-hashes">12<' in html
    assert kept() == (False, 0)
    withdrawn = last_entry(web, "status.consent")
    assert (withdrawn.target_id, withdrawn.details["outcome"]) == (str(case["case_id"]), "ok")
    assert (withdrawn.details["features_consent"], withdrawn.details["features_erased"]) == (
        False, 1)
    assert case["secret"] not in json.dumps(withdrawn.details)

    # The page now offers to give consent again, which the API's state shows.
    form = form_fields(html, "consent-form")
    assert form["features"] == "yes"
    given = client.post("/status/consent", data=form)
    assert given.status_code == 200 and 'id="case-consent">Kept' in given.get_data(as_text=True)
    assert kept() == (True, 0)
    page_entry = last_entry(web, "status.consent")
    assert (page_entry.details["features_consent"], page_entry.details["features_erased"]) == (
        True, 0)
    # The API's operation leaves the same entry.
    assert web.client.post("/v1/status/consent", json={
        "case_ref": "CONSENT-1", "secret": case["secret"], "features": True}).status_code == 200
    assert_same_audit(page_entry, last_entry(web, "status.consent"))

    # A withdrawn case offers no consent form and takes no new consent.
    client.post("/status/withdraw", data={**form, "confirm": "yes"})
    page = client.post("/status", data={**form}).get_data(as_text=True)
    assert 'id="consent-form"' not in page
    refused = client.post("/status/consent", data=form)
    assert refused.status_code == 400 and 'id="consent-error"' in refused.get_data(as_text=True)
    assert last_entry(web, "status.consent").details["outcome"] == "refused"


# -- analysts' and operators' pages --------------------------------------------------------------

def scanned(api: Api, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """Register two photos under a case and write evidence with an exact and a resized copy
    and an unrelated photo; returns the case and the evidence folder (not yet scanned)."""
    pytest.importorskip("workers.jobs")
    case = new_case(api, case_ref="CASE-WEB")
    first = encode(photo("astronaut").resize((384, 384)), "JPEG", quality=90)
    second = encode(photo("coffee").resize((400, 266)), "JPEG", quality=90)
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity",
             json=[{"file": n, **hash_bytes(d, with_variants=True).to_json()}
                   for n, d in (("a.jpg", first), ("b.jpg", second))])
    dump = tmp_path / "evidence" / "phone"
    dump.mkdir(parents=True)
    (dump / "first.jpg").write_bytes(first)
    (dump / "second.jpg").write_bytes(encode(photo("coffee").resize((200, 133)), "JPEG"))
    (dump / "other.jpg").write_bytes(encode(photo("chelsea").resize((300, 200)), "JPEG"))
    return case, dump


def test_analyst_reviews_and_downloads_reports_through_the_pages(web: Api,
                                                                 tmp_path: Path) -> None:
    case, dump = scanned(web, tmp_path)
    client = signed_in(web, "forensic")
    token = csrf(client, "/analyst/scans/new")
    outside = client.post("/analyst/scans/new", data={"source": "/etc", "csrf_token": token})
    assert outside.status_code == 400 and "evidence root" in outside.get_data(as_text=True)
    started = client.post("/analyst/scans/new", data={"source": str(dump), "label": "EXH-9",
                                                      "csrf_token": token})
    assert started.status_code == 303
    scan_id = started.headers["Location"].rsplit("/", 1)[1]
    assert last_entry(web, "scan.create").details["via"] == "web"
    wait_for_scan(web, scan_id)
    progress = client.get(f"/analyst/scans/{scan_id}/progress.json")
    assert progress.is_json and progress.json["state"] == "done"
    assert progress.json["candidates"] == 2

    page = client.get(f"/analyst/scans/{scan_id}").get_data(as_text=True)
    assert "first.jpg" in page and "second.jpg" in page and "distance" in page
    entry = last_entry(web)
    assert (entry.action, entry.details["count"]) == ("scan.candidates", 2)
    ids = {c["path"]: c["match_id"] for c in web.call(
        "GET", f"/v1/scans/{scan_id}/candidates", "forensic").json["candidates"]}

    thumb = f"/analyst/scans/{scan_id}/candidates/{ids['first.jpg']}/thumbnail"
    blurred, revealed = client.get(thumb), client.get(thumb + "?reveal=1")
    assert blurred.mimetype == revealed.mimetype == "image/jpeg"
    assert blurred.data != revealed.data and revealed.headers["Cache-Control"] == "no-store"
    entry = last_entry(web, "scan.thumbnail")
    assert (entry.details["revealed"], entry.details["via"]) == (True, "web")

    review = f"/analyst/scans/{scan_id}/review"
    nameless = client.post(review, data={"one": f"{ids['first.jpg']}:confirmed",
                                         "csrf_token": token})
    assert nameless.status_code == 400 and 'id="reviewer-error"' in nameless.get_data(
        as_text=True)
    reasonless = client.post(review, data={"match_id": [ids["second.jpg"]],
                                           "decision": "rejected", "reviewer": "DC Jones",
                                           "csrf_token": token})
    assert reasonless.status_code == 400 and 'id="reason-error"' in reasonless.get_data(
        as_text=True)
    done = client.post(review, data={"one": f"{ids['first.jpg']}:confirmed",
                                     "reviewer": "DC Smith", "csrf_token": token})
    assert done.status_code == 303
    entry = last_entry(web, "scan.review")
    assert (entry.details["changed"], entry.details["via"]) == (1, "web")
    client.post(review, data={"match_id": [ids["second.jpg"]], "decision": "rejected",
                              "reviewer": "DC Jones", "reason": "another room",
                              "csrf_token": token})
    states = {c["path"]: c["review"]["decision"] for c in web.call(
        "GET", f"/v1/scans/{scan_id}/candidates", "forensic").json["candidates"]}
    assert states == {"first.jpg": "confirmed", "second.jpg": "rejected"}

    report = f"/analyst/scans/{scan_id}/report"
    missing = client.get(report + "?format=pdf&examiner=")
    assert missing.status_code == 303  # empty fields are dropped first
    assert client.get(missing.headers["Location"]).status_code == 400
    pdf = client.get(report + "?format=pdf&examiner=DC+Smith")
    assert pdf.data.startswith(b"%PDF") and "attachment" in pdf.headers["Content-Disposition"]
    signed = client.get(report + "?format=json&examiner=DC+Smith&court=Leeds")
    envelope = json.loads(signed.data)
    assert [f["path"] for f in envelope["document"]["files"]] == ["first.jpg"]
    verdict = verify_document(envelope, [web.call("GET", "/v1/keys").json])
    assert verdict.valid and verdict.trusted
    assert last_entry(web, "scan.report").details["format"] == "json"
    # Another force's analyst sees nothing of it.
    assert signed_in(web, "forensic_b").get(f"/analyst/scans/{scan_id}").status_code == 404

    # A verification re-scan after the exact copy was wiped.
    (dump / "first.jpg").unlink()
    token = csrf(client, "/analyst/scans/new")
    again = client.post("/analyst/scans/new", content_type="multipart/form-data", data={
        "source": str(dump), "label": "EXH-9 after wipe", "csrf_token": token,
        "verify_against": (__import__("io").BytesIO(signed.data), "report.json")})
    assert again.status_code == 303, again.get_data(as_text=True)
    rescan = again.headers["Location"].rsplit("/", 1)[1]
    wait_for_scan(web, rescan)
    shown = client.get(f"/analyst/scans/{rescan}/verification?examiner=DC+Smith")
    assert shown.status_code == 200
    assert "1 were not found on re-scan" in shown.get_data(as_text=True)
    download = client.get(f"/analyst/scans/{rescan}/verification?examiner=DC+Smith&download=1")
    assert json.loads(download.data)["document"]["summary"]["gone"] == 1
    assert last_entry(web, "scan.verification").details["gone"] == 1
    forged = client.post("/analyst/scans/new", content_type="multipart/form-data", data={
        "source": str(dump), "csrf_token": token,
        "verify_against": (__import__("io").BytesIO(b"not json"), "report.json")})
    assert forged.status_code == 400 and 'id="verify-error"' in forged.get_data(as_text=True)
    assert case["case_id"]


def held_scan(api: Api, client: FlaskClient, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> str:
    """A scan started through the page and held in the queue (its jobs never run), so that it
    stays "queued" until the test moves it on."""
    jobs = pytest.importorskip("workers.jobs")
    held: list[str] = []
    monkeypatch.setattr(jobs, "start_scan", lambda _settings, scan_id: held.append(scan_id))
    (tmp_path / "evidence" / "held").mkdir(parents=True, exist_ok=True)
    started = client.post("/analyst/scans/new", data={
        "source": str(tmp_path / "evidence" / "held"), "label": "EXH-HELD",
        "csrf_token": csrf(client, "/analyst/scans/new")})
    assert started.status_code == 303, started.get_data(as_text=True)
    scan_id = started.headers["Location"].rsplit("/", 1)[1]
    assert held == [scan_id] and api.store.get_scan(scan_id).state == "queued"
    return scan_id


def set_scan_state(api: Api, scan_id: str, state: str) -> None:
    """Move a held scan on, as its jobs would have."""
    from hashsvc.store.models import Scan

    with api.store.sessions.begin() as session:
        session.execute(update(Scan).where(Scan.id == scan_id).values(
            state=state, finished_at=utcnow() if state != "running" else None))


def test_analyst_cancels_a_scan_after_confirmation(web: Api, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client = signed_in(web, "forensic")
    scan_id = held_scan(web, client, tmp_path, monkeypatch)
    set_scan_state(web, scan_id, "running")
    path = f"/analyst/scans/{scan_id}/cancel"
    page = client.get(f"/analyst/scans/{scan_id}").get_data(as_text=True)
    assert_clean_page(page)
    token = csrf(client, f"/analyst/scans/{scan_id}")
    assert form_fields(page, "cancel-form") == {"csrf_token": token}
    assert f'action="{path}"' in page

    def cancel_requested() -> bool:
        return bool(web.store.get_scan(scan_id).cancel_requested)

    # Refused without the token, for another force (404, as an unknown scan) and for another
    # role; none of them asks the scan to stop.
    assert_refused(web, client, path, "scan.cancel", other="forensic_b", wrong_role="charity")
    assert not cancel_requested()

    # The first press only asks; nothing changes and nothing is audited yet.
    entries = count_entries(web, "scan.cancel")
    asked = client.post(path, data={"csrf_token": token})
    html = asked.get_data(as_text=True)
    assert asked.status_code == 200 and "cannot be undone" in html
    assert_clean_page(html)
    assert form_fields(html, "confirm-form") == {"csrf_token": token, "confirm": "yes"}
    assert not cancel_requested()
    assert count_entries(web, "scan.cancel") == entries

    done = client.post(path, data={"csrf_token": token, "confirm": "yes"})
    assert done.status_code == 303 and done.headers["Location"] == f"/analyst/scans/{scan_id}"
    assert cancel_requested()
    entry = last_entry(web, "scan.cancel")
    assert (entry.target_type, entry.target_id, entry.org_id, entry.details["outcome"]) == (
        "scan", scan_id, web.orgs["forensic"], "ok")
    shown = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Cancellation requested" in shown and 'id="cancel-requested"' in shown
    assert 'id="cancel-form"' not in shown  # asked already: no second button
    # The API's operation leaves the same entry.
    assert web.call("POST", f"/v1/scans/{scan_id}/cancel", "forensic").status_code == 202
    assert_same_audit(entry, last_entry(web, "scan.cancel"))

    # A finished scan has no button, and cancelling it is a 409 as in the API.
    set_scan_state(web, scan_id, "cancelled")
    page = client.get(f"/analyst/scans/{scan_id}").get_data(as_text=True)
    assert 'id="cancel-form"' not in page and 'id="cancel-requested"' not in page
    late = client.post(path, data={"csrf_token": token, "confirm": "yes"})
    assert late.status_code == 409 and 'id="cancel-error"' in late.get_data(as_text=True)
    page_entry = last_entry(web, "scan.cancel")
    assert page_entry.details["outcome"] == "refused"
    assert web.call("POST", f"/v1/scans/{scan_id}/cancel", "forensic").status_code == 409
    assert_same_audit(page_entry, last_entry(web, "scan.cancel"))


WIPE = {"medium": "Samsung T7 S/N 123", "method": "purge", "technique": "crypto erase",
        "tool": "nwipe", "tool_version": "0.34", "verification_method": "re-scan with hashsvc",
        "verification_result": "no files found", "operator": "DC Smith",
        "date": "2026-03-14", "notes": ""}


def test_analyst_records_wipes_on_the_scan_page(web: Api, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from hashsvc.verification import wipe_records

    client = signed_in(web, "forensic")
    scan_id = held_scan(web, client, tmp_path, monkeypatch)
    scan_page = f"/analyst/scans/{scan_id}"
    path = f"{scan_page}/wipe-records"
    assert 'id="wipe-form"' not in client.get(scan_page).get_data(as_text=True)  # not done yet
    set_scan_state(web, scan_id, "done")
    page = client.get(scan_page).get_data(as_text=True)
    assert_clean_page(page)
    assert "No medium of this scan has a wipe record yet" in page
    token = csrf(client, scan_page)
    assert form_fields(page, "wipe-form") == {"csrf_token": token}
    for name in WIPE:
        assert f'name="{name}"' in page, name

    def records() -> list[dict[str, Any]]:
        return wipe_records(web.store, [scan_id])

    # Refused without the token, for another force (404) and for another role.
    assert client.post(path, data=WIPE).status_code == 403
    assert client.post(path, data={**WIPE, "csrf_token": "forged"}).status_code == 403
    other = signed_in(web, "forensic_b")
    assert other.post(path, data={**WIPE, "csrf_token": csrf(other, "/analyst/scans")}
                      ).status_code == 404
    entry = last_entry(web, "scan.wipe_record")
    assert (entry.org_id, entry.details["denied"]) == (web.orgs["forensic_b"], "other_org")
    caseworker = signed_in(web, "charity")
    assert caseworker.post(path, data={**WIPE, "csrf_token": csrf(
        caseworker, "/charity/cases")}).status_code == 403
    assert last_entry(web, "scan.wipe_record").details["outcome"] == "denied"
    assert records() == []

    # The API's checks: the required fields, and a NIST method; the form keeps what was typed.
    missing = client.post(path, data={**WIPE, "tool": " ", "operator": "", "csrf_token": token})
    html = missing.get_data(as_text=True)
    assert missing.status_code == 400 and 'id="wipe-error"' in html
    assert "a wipe record needs tool, operator" in html
    assert re.search(r'id="wipe-tool"[^>]*aria-invalid="true"', html)
    assert re.search(r'id="wipe-operator"[^>]*aria-invalid="true"', html)
    assert not re.search(r'id="wipe-medium"[^>]*aria-invalid', html)
    assert 'value="Samsung T7 S/N 123"' in html
    assert last_entry(web, "scan.wipe_record").details["outcome"] == "refused"
    burnt = client.post(path, data={**WIPE, "method": "burn", "csrf_token": token})
    assert burnt.status_code == 400 and "method must be one of clear, purge, destroy" in \
        burnt.get_data(as_text=True)
    assert records() == []

    # Saved; fields the API does not take (a forged recorder) are not sent on.
    saved = client.post(path, data={**WIPE, "recorded_by": "someone else", "csrf_token": token})
    assert saved.status_code == 303
    assert saved.headers["Location"] == f"{scan_page}#wipe-records"
    prefix = accounts.authenticate(web.store, web.keys["forensic"]).prefix
    [record] = records()
    assert record["fields"] == {k: v for k, v in WIPE.items() if v}
    assert record["recorded_by"] == f"forensic_a org (key {prefix})"
    page_entry = last_entry(web, "scan.wipe_record")
    assert (page_entry.target_id, page_entry.org_id, page_entry.details["outcome"]) == (
        scan_id, web.orgs["forensic"], "ok")
    assert (page_entry.details["medium"], page_entry.details["method"]) == (
        "Samsung T7 S/N 123", "purge")
    shown = client.get(scan_page).get_data(as_text=True)
    assert "The wipe record of Samsung T7 S/N 123 was saved." in shown
    listed = re.search(r'<table id="wipe-list">(.*?)</table>', shown, re.S)[1]
    assert "Samsung T7 S/N 123" in listed and "nwipe 0.34" in listed and "DC Smith" in listed
    assert f"forensic_a org (key {prefix})" in listed

    # The API's operation leaves the same entry and the same record.
    api = web.call("POST", path.replace("/analyst", "/v1"), "forensic",
                   json={k: v for k, v in WIPE.items() if v})
    assert api.status_code == 201
    assert_same_audit(page_entry, last_entry(web, "scan.wipe_record"))
    first, second = records()
    assert (first["fields"], first["recorded_by"]) == (second["fields"], second["recorded_by"])
    listed = re.search(r'<table id="wipe-list">.*?<tbody>(.*?)</tbody>',
                       client.get(scan_page).get_data(as_text=True), re.S)[1]
    assert listed.count("<tr>") == 2 and listed.count("Samsung T7 S/N 123") == 2


def test_operator_pages_make_and_revoke_keys_and_verify_the_chain(web: Api) -> None:
    client = signed_in(web, "admin")
    token = csrf(client, "/admin/orgs")
    assert client.post("/admin/orgs", data={"name": "New Platform", "csrf_token": token}
                       ).status_code == 303
    assert last_entry(web, "org.create").details == {"via": "web"}
    taken = client.post("/admin/orgs", data={"name": "New Platform", "csrf_token": token})
    assert taken.status_code == 409 and 'id="name-error"' in taken.get_data(as_text=True)
    org_id = int(last_entry(web, "org.create").target_id)
    client.post(f"/admin/orgs/{org_id}/bank-sync", data={"granted": "true",
                                                        "csrf_token": token})
    assert accounts.list_orgs(web.store)[-1]["bank_sync"] is True

    made = client.post("/admin/keys", data={"org_id": str(org_id), "role": "platform",
                                            "label": "uploads", "csrf_token": token})
    key = re.search(r'id="new-key">([^<]+)<', made.get_data(as_text=True))[1]
    assert made.headers["Cache-Control"] == "no-store"
    principal = accounts.authenticate(web.store, key)
    assert principal is not None and principal.org_id == org_id
    listed = client.get("/admin/keys").get_data(as_text=True)
    assert key not in listed and principal.prefix in listed  # shown once, never again
    assert key not in json.dumps([e.details for e in audit.entries(web.store, 0, 10_000)])
    asked = client.post(f"/admin/keys/{principal.key_id}/revoke", data={"csrf_token": token})
    assert asked.status_code == 200 and "cannot be undone" in asked.get_data(as_text=True)
    assert accounts.authenticate(web.store, key) is not None  # not before the confirmation
    client.post(f"/admin/keys/{principal.key_id}/revoke", data={"csrf_token": token,
                                                                 "confirm": "yes"})
    assert accounts.authenticate(web.store, key) is None
    assert last_entry(web, "key.revoke").details == {"via": "web"}

    page = client.get("/admin/audit").get_data(as_text=True)
    assert "key.revoke" in page
    verified = client.get("/admin/audit/verify").get_data(as_text=True)
    assert 'id="chain-verdict"' in verified and "intact" in verified
    assert last_entry(web).action == "audit.verify"


# -- in a real browser ---------------------------------------------------------------------------

@contextmanager
def serving(api: Api) -> Iterator[str]:
    """The app on a loopback port (http://127.0.0.1 is a secure context for WebCrypto)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, api.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def browser_page(chromium: Any, base: str, mobile: bool = False  # noqa: F811
                 ) -> Iterator[tuple[Any, list[Any], list[str]]]:
    """A fresh context and page; every request it makes, and every script error or CSP
    complaint it logs."""
    options: dict[str, Any] = {"base_url": base, "accept_downloads": True}
    if mobile:
        options.update(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                       is_mobile=True, has_touch=True)
    else:
        options.update(viewport={"width": 1280, "height": 900})
    context = chromium.new_context(**options)
    # Generous: a PDF report or a scan on a busy 2-core machine can take a while; a real
    # failure still fails, just later.
    context.set_default_timeout(120_000)
    requests: list[Any] = []
    problems: list[str] = []
    context.on("request", lambda request: requests.append(request))
    page = context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" else None)
    try:
        yield page, requests, problems
    finally:
        context.close()


def shot(page: Any, name: str) -> None:
    """A full-page screenshot for docs/web.md."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def wait_until(page: Any, expression: str, timeout: float = 120) -> None:
    """Wait until a JavaScript expression is true in the page. Playwright's
    wait_for_function polls with eval(), which the pages' CSP (no 'unsafe-eval') refuses
    whenever the condition is not already true; page.evaluate is not subject to it."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true after {timeout} s: {expression}"
        page.wait_for_timeout(100)


def browser_sign_in(page: Any, key: str) -> None:
    """Sign in through the form."""
    page.goto("/signin")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def test_browser_intake_sends_hashes_only(chromium: Any, web: Api,  # noqa: F811
                                          tmp_path: Path) -> None:
    case = new_case(web, case_ref="RPH-BROWSER-1")
    link = intake_link(web, case["case_id"])
    files = {
        "IMG_2041 beach.jpg": encode(photo("astronaut").resize((640, 640)), "JPEG", quality=88),
        "screenshot-private.png": encode(noise_image(7, (480, 360)), "PNG"),
    }
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "IMG_2042.HEIC").write_bytes(heic)
    with serving(web) as base, browser_page(chromium, base, mobile=True) as (page, requests,
                                                                             problems):
        page.goto("/")
        assert page.title().startswith("Start")
        page.goto(link["url"])
        assert page.get_by_label("Registration code", exact=True).input_value() == link["code"]
        assert "#" not in page.url  # the code left the address bar at once
        page.get_by_label("Photos", exact=True).set_input_files(
            [str(tmp_path / n) for n in (*files, "IMG_2042.HEIC")])
        page.wait_for_selector("#preview-section:not([hidden])", timeout=60_000)
        wait_until(page, "document.getElementById('hash-progress').textContent"
                         ".includes('of 3 photos hashed')", timeout=60)
        assert "cannot read HEIC" in page.locator("#file-list").inner_text()
        shown = json.loads(page.locator("#preview").inner_text())
        assert shown["code"] == link["code"]
        assert [line["file"] for line in shown["lines"]] == ["photo 1", "photo 2"]
        shot(page, "intake-before-send")
        page.get_by_role("button", name="Send these hashes").click()
        page.wait_for_selector("#result.ok", timeout=30_000)
        assert "2 photos were registered" in page.locator("#result").inner_text()
        shot(page, "intake-after-send")
        assert problems == []

    # Every request went to this server; the one POST is the JSON shown, with no image bytes.
    assert requests and all(r.url.startswith(base + "/") for r in requests)
    assert all(link["code"] not in r.url for r in requests)
    posts = [r for r in requests if r.method != "GET"]
    assert [(r.method, r.url) for r in posts] == [("POST", base + "/v1/intake")]
    body = posts[0].post_data_buffer
    assert json.loads(body) == shown and len(body) < 20_000
    for request in requests:
        data = request.post_data_buffer or b""
        for name, content in files.items():
            assert content[:64] not in data and content[-64:] not in data
            assert name.encode() not in data and name.split(".")[0] not in request.url
        assert b"\xff\xd8\xff" not in data and b"\x89PNG" not in data and b"ftyp" not in data
    allowed = {"file", "sha256", "md5", "size", "format", "width", "height", "hashes",
               "quality", "variants", "hash_format", "decode_version", "hashed_in"}
    assert all(set(line) <= allowed for line in shown["lines"])

    # The bank holds the browser's hashes: exact sha256, PDQ within the threshold of Python's.
    with web.store.sessions() as session:
        rows = session.execute(
            select(RegisteredImage.sha256, BankHash.value)
            .join(BankHash, BankHash.image_id == RegisteredImage.id)
            .where(RegisteredImage.case_id == case["case_id"], BankHash.algorithm == "pdq",
                   BankHash.variant == "orig")).all()
    bank = dict(rows)
    assert len(bank) == 2
    for data in files.values():
        python = hash_bytes(data, with_variants=True)
        assert python.sha256 in bank
        assert hamming_hex(bank[python.sha256], python.hashes["pdq"]) <= web.settings.pdq_threshold
    entry = last_entry(web, "intake.register")
    assert (entry.target_id, entry.details["images_added"]) == (str(case["case_id"]), 2)


def test_browser_landing_and_victim_status(chromium: Any, web: Api) -> None:  # noqa: F811
    case = new_case(web, case_ref="RPH-BROWSER-2")
    web.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity",
             json=[hash_line(11), hash_line(12)])
    with serving(web) as base:
        with browser_page(chromium, base) as (page, _requests, problems):
            page.goto("/")
            for name in ("Register your photos", "See your case's status", "Caseworker pages",
                         "Scans", "API keys"):
                assert page.get_by_role("link", name=name).count() >= 1, name
            shot(page, "landing")
            # A caseworker makes a registration link for the case.
            browser_sign_in(page, web.keys["charity"])
            page.get_by_role("link", name="RPH-BROWSER-2").click()
            page.get_by_role("button", name="Make a registration link").click()
            page.wait_for_selector("#intake-link")
            assert page.locator("#intake-link").inner_text().startswith(f"{base}/intake#code=")
            shot(page, "caseworker-case")
            assert problems == []
        with browser_page(chromium, base, mobile=True) as (page, requests, problems):
            page.goto("/status")
            page.get_by_label("Case reference", exact=True).fill("RPH-BROWSER-2")
            page.get_by_label("Secret", exact=True).fill(case["secret"].lower())
            page.get_by_role("button", name="Show my case").click()
            page.wait_for_selector("#case-state")
            assert page.locator("#case-images").inner_text() == "2"
            shot(page, "status")
            page.get_by_role("button", name="Withdraw my case…").click()
            page.wait_for_selector("#confirm-withdraw")
            shot(page, "status-withdraw-confirm")
            assert web.call("GET", f"/v1/cases/{case['case_id']}", "charity"
                            ).json["state"] == "active"
            page.get_by_role("button", name="Yes, withdraw my case").click()
            page.wait_for_selector("#withdrawn-message")
            assert page.locator("#case-state").inner_text() == "Withdrawn"
            assert problems == []
            # Keyboard only: the skip link comes first and leads to the content.
            page.goto("/status")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent").startswith("Skip")
    assert all(r.url.startswith(base + "/") for r in requests)
    assert web.call("GET", f"/v1/cases/{case['case_id']}", "charity").json["state"] == \
        "withdrawn"


def test_browser_analyst_confirms_and_downloads_the_report(chromium: Any, web: Api,  # noqa: F811
                                                           tmp_path: Path) -> None:
    _case, dump = scanned(web, tmp_path)
    with serving(web) as base, browser_page(chromium, base) as (page, requests, problems):
        browser_sign_in(page, web.keys["forensic"])
        assert page.url.endswith("/analyst/scans")
        page.get_by_role("link", name="Start a scan").first.click()
        page.get_by_label("Source", exact=True).fill(str(dump))
        page.get_by_label("Exhibit label (optional)", exact=True).fill("EXH-12 phone")
        page.get_by_role("button", name="Start the scan").click()
        # The progress updates itself, and the page shows the candidates once the scan is done.
        page.wait_for_selector("#candidates", timeout=90_000)
        page.goto("/analyst/scans")
        page.wait_for_selector(".state-done")
        shot(page, "analyst-scans")
        page.get_by_role("link", name="EXH-12 phone").click()
        page.wait_for_selector("#candidates")
        images = page.locator("img.thumb")
        assert images.count() == 2
        wait_until(page, "Array.from(document.images).every(i => i.complete && "
                         "i.naturalWidth > 0)")
        shot(page, "analyst-candidates")
        first = page.locator("tr", has=page.get_by_text("first.jpg", exact=True))
        first.get_by_role("button", name="Reveal").click()
        # The revealed picture loaded (made in a reading and a decoding child: a moment).
        wait_until(page, "(() => { const i = document.querySelector('img.thumb'); return "
                         "i.src.includes('reveal=1') && i.complete && i.naturalWidth > 0; })()")
        page.get_by_label("Your name (the reviewer)", exact=True).fill("DC Smith")
        first.get_by_role("button", name=re.compile("^Confirm candidate")).click()
        page.wait_for_selector(".message.ok")
        assert "1 candidate confirmed" in page.locator(".message.ok").inner_text()
        assert page.locator("tr", has=page.get_by_text("first.jpg", exact=True)).locator(
            ".decision-confirmed").count() == 1
        assert page.get_by_label("Examiner", exact=True).input_value() == "DC Smith"
        with page.expect_download() as pdf_download:
            page.get_by_role("button", name="Download PDF").click()
        pdf = Path(pdf_download.value.path()).read_bytes()
        assert pdf.startswith(b"%PDF") and pdf_download.value.suggested_filename.endswith(".pdf")
        with page.expect_download() as json_download:
            page.get_by_role("button", name="Download signed JSON").click()
        envelope = json.loads(Path(json_download.value.path()).read_text())
        assert problems == []
    assert [f["path"] for f in envelope["document"]["files"]] == ["first.jpg"]
    assert envelope["document"]["files"][0]["review"]["reviewer"] == "DC Smith"
    verdict = verify_document(envelope, [web.call("GET", "/v1/keys").json])
    assert verdict.valid and verdict.trusted
    assert all(r.url.startswith(base + "/") for r in requests)
    reveals = [e for e in audit.entries(web.store, 0, 100_000)
               if e.action == "scan.thumbnail" and e.details.get("revealed")]
    assert len(reveals) == 1 and reveals[0].details["via"] == "web"


def test_browser_operator_makes_a_key_and_checks_the_chain(chromium: Any,  # noqa: F811
                                                           web: Api) -> None:
    with serving(web) as base, browser_page(chromium, base) as (page, requests, problems):
        browser_sign_in(page, web.keys["admin"])
        page.get_by_role("link", name="API keys").click()
        page.get_by_label("Organisation", exact=True).select_option(label="platform_a org")
        page.get_by_label("Role", exact=True).select_option("platform")
        page.get_by_label("Label (optional)", exact=True).fill("upload scanner")
        page.get_by_role("button", name="Make the key").click()
        page.wait_for_selector("#new-key")
        key = page.locator("#new-key").inner_text().strip()
        assert accounts.authenticate(web.store, key) is not None
        shot(page, "admin-keys")
        page.get_by_role("link", name="Audit log").click()
        page.get_by_role("button", name="Verify the chain").click()
        page.wait_for_selector("#chain-verdict")
        assert "intact" in page.locator("#chain-verdict").inner_text()
        shot(page, "admin-audit")
        page.goto("/admin/keys")
        assert key not in page.content()  # shown once only
        assert problems == []
    assert all(r.url.startswith(base + "/") for r in requests)
def test_browser_new_secret_consent_cancel_and_wipe(chromium: Any, web: Api,  # noqa: F811
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    case = new_case(web, case_ref="RPH-BROWSER-3")
    with serving(web) as base:
        # Without JavaScript: a caseworker gives the victim a new secret, and the victim
        # uses it to give consent to local features.
        context = chromium.new_context(base_url=base, java_script_enabled=False)
        context.set_default_timeout(120_000)
        try:
            page = context.new_page()
            browser_sign_in(page, web.keys["charity"])
            page.get_by_role("link", name="RPH-BROWSER-3").click()
            page.get_by_role("button", name="Give the victim a new secret…").click()
            page.wait_for_selector("#confirm-new-secret")
            page.get_by_role("button", name="Yes, make a new secret").click()
            page.wait_for_selector("#victim-secret")
            secret = page.locator("#victim-secret").inner_text().strip()
            assert secret != case["secret"]
            page.goto("/status")
            page.get_by_label("Case reference", exact=True).fill("RPH-BROWSER-3")
            page.get_by_label("Secret", exact=True).fill(secret)
            page.get_by_role("button", name="Show my case").click()
            page.wait_for_selector("#case-state")
            assert page.locator("#case-consent").inner_text().startswith("Not kept")
            page.get_by_role("button", name="Give my consent to keeping local features").click()
            page.wait_for_selector("#consent-message")
            assert page.locator("#case-consent").inner_text().startswith("Kept")
        finally:
            context.close()
    assert web.call("GET", f"/v1/cases/{case['case_id']}", "charity"
                    ).json["features_consent"] is True
    assert last_entry(web, "status.consent").details["via"] == "web"

    # With JavaScript (and the CSP): an analyst cancels a running scan, then records a wipe.
    client = signed_in(web, "forensic")
    scan_id = held_scan(web, client, tmp_path, monkeypatch)
    set_scan_state(web, scan_id, "running")
    with serving(web) as base, browser_page(chromium, base) as (page, requests, problems):
        browser_sign_in(page, web.keys["forensic"])
        page.goto(f"/analyst/scans/{scan_id}")
        page.get_by_role("button", name="Cancel scan…").click()
        page.wait_for_selector("#confirm-cancel")
        assert not web.store.get_scan(scan_id).cancel_requested
        page.get_by_role("button", name="Yes, cancel the scan").click()
        page.wait_for_selector("#cancel-requested")
        assert web.store.get_scan(scan_id).cancel_requested
        set_scan_state(web, scan_id, "done")
        page.goto(f"/analyst/scans/{scan_id}")
        for label, value in (("Medium", "Pixel 7 IMEI 3569"), ("Tool", "factory reset"),
                             ("Verification method", "re-scan"),
                             ("Verification result", "nothing found"),
                             ("Operator", "DC Smith"), ("Date", "2026-03-14")):
            page.get_by_label(label, exact=True).fill(value)
        page.get_by_label("Method", exact=True).select_option("purge")
        page.get_by_role("button", name="Save the wipe record").click()
        page.wait_for_selector("#wipe-list")
        assert "Pixel 7 IMEI 3569" in page.locator("#wipe-list").inner_text()
        assert "was saved" in page.locator(".message.ok").inner_text()
        assert problems == []
    assert all(r.url.startswith(base + "/") for r in requests)
    entry = last_entry(web, "scan.wipe_record")
    assert (entry.target_id, entry.details["medium"], entry.details["via"]) == (
        scan_id, "Pixel 7 IMEI 3569", "web")
