"""Bank sync: a platform granted it pages additions and withdrawals, matches on its own copy and
gets exactly the lookup API's answers; the feed never skips a change, even under concurrent
writers on PostgreSQL."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from hashsvc import accounts
from hashsvc.bank_sync import LocalBank, RefCipher, read_feed, sync
from hashsvc.settings import Settings
from hashsvc.store import Store

from test_api import Api, api, eventually, hash_line, lookup, new_case  # noqa: F401


def flip(value: str, bits: int, seed: int) -> str:
    """``value`` (hex) with ``bits`` distinct random bits flipped."""
    width = len(value) * 4
    mask = 0
    for bit in random.Random(seed).sample(range(width), bits):
        mask |= 1 << bit
    return format(int(value, 16) ^ mask, f"0{len(value)}x")


def fetcher(api: Api, who: str = "platform") -> Any:
    """What a platform's sync client does: GET /v1/bank/changes."""
    def fetch(cursor: int, limit: int) -> dict[str, Any]:
        response = api.call("GET", f"/v1/bank/changes?cursor={cursor}&limit={limit}", who)
        assert response.status_code == 200, response.json
        return response.json
    return fetch


def video_line(seed: int) -> dict[str, Any]:
    """A registered video's line: the file's exact hashes and three frames' PDQ hashes."""
    frames = [hash_line(seed * 10 + n) for n in range(3)]
    return {"sha256": format(seed, "064x"), "md5": format(seed, "032x"), "media": "video",
            "duration": 3.0, "frames": [
                {"t": float(n), "hashes": {"pdq": f["hashes"]["pdq"]},
                 "quality": {"pdq": 100}} for n, f in enumerate(frames)]}


def queries_for(lines: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """Lookups around every threshold: exact copies, near copies just inside and just outside,
    rotated variants, low-quality PDQ, exact hashes, and unrelated values."""
    out: list[dict[str, Any]] = []
    pdq_t = settings.pdq_threshold
    for n, line in enumerate(lines):
        if line.get("media") == "video":
            frame = line["frames"][1]["hashes"]["pdq"]
            out += [{"algorithm": "pdq", "value": flip(frame, 5, n)},
                    {"algorithm": "sha256", "value": line["sha256"]}]
            continue
        pdq = line["hashes"]["pdq"]
        out += [{"algorithm": "pdq", "value": flip(pdq, bits, n * 100 + bits)}
                for bits in (0, 9, pdq_t - 1, pdq_t, pdq_t + 1, pdq_t + 9)]
        out += [{"algorithm": "pdq", "value": flip(pdq, 4, n), "quality": q} for q in (10, 90)]
        out.append({"algorithm": "pdq", "value": line["variants"]["pdq"]["rot90"]})
        for alg in ("phash", "dhash"):
            t = settings.thresholds()[alg]
            out += [{"algorithm": alg, "value": flip(line["hashes"][alg], bits, n + bits)}
                    for bits in (0, t, t + 1)]
        out += [{"algorithm": "sha256", "value": line["sha256"]},
                {"algorithm": "md5", "value": line["md5"].upper()}]
    out.append({"algorithm": "pdq", "value": format(random.Random(7).getrandbits(256), "064x")})
    return out


def compare(api: Api, bank: LocalBank, queries: list[dict[str, Any]]) -> list[Any]:
    """The lookup API's results, checked equal to the synced copy's."""
    remote = lookup(api, queries).json["results"]
    local = bank.search(queries)
    for query, want, got in zip(queries, remote, local):
        assert got == want, (query, want, got)
    return remote


def test_a_synced_copy_answers_as_the_lookup_api(api: Api) -> None:
    # A platform not granted sync may not page the bank.
    assert api.call("GET", "/v1/bank/changes", "platform").status_code == 403
    admin = api.call("POST", f"/v1/orgs/{api.orgs['platform']}/bank-sync", "admin",
                     json={"granted": True})
    assert admin.status_code == 200
    assert [o["bank_sync"] for o in api.call("GET", "/v1/orgs", "admin").json["orgs"]
            if o["org_id"] == api.orgs["platform"]] == [True]

    first, second = new_case(api), new_case(api)
    lines_a = [hash_line(n) for n in (101, 102, 103)] + [video_line(104)]
    lines_b = [hash_line(n) for n in (105, 106)]
    api.call("POST", f"/v1/cases/{first['case_id']}/hashes", "charity", json=lines_a)
    api.call("POST", f"/v1/cases/{second['case_id']}/hashes", "charity", json=lines_b)

    bank = LocalBank()
    pages: list[int] = []
    sync(bank, fetcher(api), page_size=7, progress=pages.append)
    assert len(pages) > 3 and bank.entries  # paged in small pages, in order
    queries = queries_for(lines_a + lines_b, api.settings)
    # The API's index refreshes within 0.2 s here; wait until it has every registration.
    assert eventually(lambda: all(r["matches"] for r in
                                  lookup(api, queries[:1]).json["results"]))
    results = compare(api, bank, queries)
    matched = sum(1 for r in results if r["matches"])
    assert 20 < matched < len(queries)  # both matches and misses are compared
    # A video's frames answer as the video: the frame's and the file's reference agree.
    at = len(queries_for(lines_a[:3], api.settings)) - 1  # less the unrelated value at the end
    video_frame, video_file = results[at], results[at + 1]
    assert (video_frame["algorithm"], video_file["algorithm"]) == ("pdq", "sha256")
    assert video_frame["matches"][0]["match_ref"] == video_file["matches"][0]["match_ref"]

    # Withdraw a case and register another: an incremental sync catches up exactly.
    api.call("POST", f"/v1/cases/{second['case_id']}/withdraw", "charity")
    third = new_case(api)
    lines_c = [hash_line(107)]
    api.call("POST", f"/v1/cases/{third['case_id']}/hashes", "charity", json=lines_c)
    cursor = bank.cursor
    page = fetcher(api)(cursor, 10_000)
    ops = {c["op"] for c in page["changes"]}
    assert ops == {"add", "withdraw"}
    assert all(set(c) == {"seq", "op", "entry"} for c in page["changes"] if c["op"] == "withdraw")
    sync(bank, fetcher(api))
    queries = queries_for(lines_a + lines_b + lines_c, api.settings)
    assert eventually(lambda: lookup(api, queries[-2:-1]).json["results"][0]["matches"])
    assert eventually(lambda: all(
        not r["matches"] for r in lookup(api, queries_for(lines_b, api.settings)[:1])
        .json["results"]))
    compare(api, bank, queries)
    # A platform that syncs from scratch never sees a withdrawn hash's value.
    fresh = LocalBank()
    sync(fresh, fetcher(api))
    assert fresh.entries.keys() == bank.entries.keys()
    withdrawn = {line["hashes"]["pdq"] for line in lines_b}
    assert not withdrawn & {value for _, _, value in fresh.entries.values()}

    # Another platform's copy has other references; references tell nothing of cases.
    accounts.set_bank_sync(api.store, api.orgs["platform_b"], True)
    other = LocalBank()
    sync(other, fetcher(api, "platform_b"))
    assert not {r for r, _, _ in other.entries.values()} & {r for r, _, _ in
                                                            bank.entries.values()}
    assert first["case_ref"] not in str(fetcher(api)(0, 10_000))


def test_references_are_per_platform_and_reversible_only_by_the_server() -> None:
    refs = RefCipher(b"secret one")
    ref = refs.match_ref(5, 12345)
    assert ref == refs.match_ref(5, 12345) and ref != refs.match_ref(6, 12345)
    assert refs.image_of(5, ref) == 12345
    assert refs.image_of(6, ref) is None  # made for another platform
    assert RefCipher(b"secret two").image_of(5, ref) != 12345
    for bad in (None, 7, "", "m_zz", ref[:-2], "x" + ref[1:]):
        assert refs.image_of(5, bad) is None
    assert refs.entry_ref(5, 12345) != ref.replace("m_", "e_")


def test_a_synced_bank_survives_a_restart(api: Api, tmp_path: Any) -> None:
    accounts.set_bank_sync(api.store, api.orgs["platform"], True)
    case = new_case(api)
    api.call("POST", f"/v1/cases/{case['case_id']}/hashes", "charity", json=[hash_line(111)])
    bank = LocalBank()
    sync(bank, fetcher(api))
    bank.save(tmp_path / "bank.json")
    again = LocalBank.load(tmp_path / "bank.json")
    assert (again.cursor, again.entries, again.rules) == (bank.cursor, bank.entries, bank.rules)
    assert LocalBank.load(tmp_path / "missing.json").cursor == 0


def test_the_feed_never_skips_a_change_under_concurrent_writers(pg_store: Store) -> None:
    """PostgreSQL assigns sequence numbers before commit; the feed's writer lock keeps a
    reader that pages while registrations commit from moving past one still in flight."""
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        cursor = 0
        while True:
            rows, cursor_next = read_feed(pg_store, cursor, 50)
            seen.extend(r.seq for r in rows)
            cursor = cursor_next
            if stop.is_set() and not rows:
                rows, _ = read_feed(pg_store, cursor, 50)
                if not rows:
                    return

    def writer(n: int) -> None:
        for k in range(25):
            pg_store.register(f"W{n}-{k}", [hash_line(1000 * n + k)])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join(timeout=60)
    everything = [c.seq for c in pg_store.bank_changes(0)]
    assert len(everything) > 4 * 25
    assert sorted(seen) == everything  # every change once, none skipped
    assert seen == sorted(seen)


@pytest.mark.parametrize("limit", ["0", "10001", "x"])
def test_feed_paging_is_validated(api: Api, limit: str) -> None:
    accounts.set_bank_sync(api.store, api.orgs["platform"], True)
    response = api.call("GET", f"/v1/bank/changes?limit={limit}", "platform")
    assert response.status_code == 400
