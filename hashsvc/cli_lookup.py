"""``hashsvc lookup HASHFILE``: look hash lines up in the embedded bank or a remote service.

Input lines are what ``hashsvc hash`` prints, or ``{"hashes": {ALGORITHM: HEX}}`` with only
some hashes (``sha256`` and ``md5`` may be given inside ``hashes`` or beside it). One JSON line
is printed per input line, in order, with its ``"matches"``: against the embedded bank each
names the ``"case"``, the ``"algorithm"`` that decided and the ``"distance"`` (the matching
rule of a scan); against a service (``--url``, ``--key``) each carries the opaque
``"match_ref"`` the service gives platforms, never the case; against a bank copy kept by
``hashsvc sync`` (``--synced FILE``) the same references, without a request per lookup.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Iterator, TextIO

import click

from hashsvc.cli import Context, _fail, main, pass_ctx
from hashsvc.errors import HashsvcError, InputError
from hashsvc.hashing import EXACT_ALGORITHMS as EXACT
from hashsvc.hashing import HEX_DIGITS as DIGITS
from hashsvc.hashing import FrameHash, HashSet

_HEX = re.compile(r"^[0-9a-f]*$")
#: Queries per request to a remote service (its limit is 10,000 a request).
REMOTE_BATCH = 5000


def _hashes(line: dict[str, Any]) -> dict[str, str]:
    """Every hash of a line by algorithm (exact hashes beside ``hashes`` included), checked."""
    given = line.get("hashes") or {}
    if not isinstance(given, dict):
        raise InputError("hashes must be an object of algorithm: hex")
    out = {**{k: line[k] for k in EXACT if isinstance(line.get(k), str) and line[k]}, **given}
    for name, value in out.items():
        if name not in DIGITS:
            raise InputError(f"unknown hash algorithm {str(name)[:32]!r}")
        if not isinstance(value, str) or len(value) != DIGITS[name] or not _HEX.match(value):
            raise InputError(f"{name} must be {DIGITS[name]} lowercase hex digits")
    if not out and not line.get("frames"):
        raise InputError("the line carries no hash")
    return out


def line_hashset(line: Any) -> HashSet:
    """A hash line as the hash set a scan would match (missing facts left empty)."""
    if not isinstance(line, dict):
        raise InputError("a line must be a JSON object")
    hashes = _hashes(line)
    quality = line.get("quality") if isinstance(line.get("quality"), dict) else {}
    variants = line.get("variants") if isinstance(line.get("variants"), dict) else {}
    frames = []
    for frame in line.get("frames") or []:
        if not isinstance(frame, dict):
            raise InputError("frames must be objects")
        frames.append(FrameHash(float(frame.get("t") or 0.0), _hashes(frame),
                                frame.get("quality") or {}, frame.get("variants") or {}))
    return HashSet(sha256=hashes.get("sha256", ""), md5=hashes.get("md5", ""),
                   size=int(line.get("size") or 0), format=str(line.get("format") or ""),
                   width=0, height=0,
                   hashes={k: v for k, v in hashes.items() if k not in EXACT},
                   quality=dict(quality), variants={k: dict(v) for k, v in variants.items()},
                   media="video" if frames else "image", frames=tuple(frames))


def _lines(stream: TextIO) -> Iterator[tuple[int, Any]]:
    """Numbered JSON lines (blank lines skipped); a line that is not JSON is an InputError."""
    for number, text in enumerate(stream, 1):
        if text.strip():
            try:
                yield number, json.loads(text)
            except ValueError:
                yield number, InputError("not a JSON line")


@main.command()
@click.argument("hashfile", type=click.File("r", encoding="utf-8"))
@click.option("--url", default=None, help="A hashsvc service to ask (else the embedded bank).")
@click.option("--key", envvar="HASHSVC_API_KEY", default=None,
              help="The platform API key for --url (or HASHSVC_API_KEY).")
@click.option("--synced", "synced", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A bank copy made by `hashsvc sync`: match on this machine, with the answers "
                   "(and match references) the service would give.")
@pass_ctx
def lookup(ctx: Context, hashfile: TextIO, url: str | None, key: str | None,
           synced: str | None) -> None:
    """Look up every line of HASHFILE ('-' for standard input): one JSON line out per line."""
    if url and synced:
        raise _fail(InputError("--url and --synced are alternatives: give one"))
    parsed: list[tuple[int, Any]] = []
    for number, value in _lines(hashfile):
        try:
            if isinstance(value, InputError):
                raise value
            if isinstance(value, dict) and "error" in value:
                raise InputError(f"the line records a hashing error: {value['error']}")
            parsed.append((number, line_hashset(value)))
        except (InputError, TypeError, ValueError) as exc:
            parsed.append((number, exc))
    try:
        answers = (_remote(parsed, url, key) if url else
                   _synced(parsed, synced) if synced else _embedded(ctx, parsed))
    except HashsvcError as exc:
        raise _fail(exc) from exc
    failed = False
    for (number, item), matches in zip(parsed, answers):
        if isinstance(item, Exception):
            failed = True
            out: dict[str, Any] = {"line": number, "error": str(item)}
        else:
            out = {"line": number, "sha256": item.sha256 or None, "matches": matches}
        click.echo(json.dumps(out, ensure_ascii=False))
    if failed:
        sys.exit(1)


def _embedded(ctx: Context, parsed: list[tuple[int, Any]]) -> list[list[dict[str, Any]]]:
    """Matches of each line in the embedded bank, by the scan's matching rule."""
    from hashsvc.matching import BankMatcher

    sets = [item for _, item in parsed if isinstance(item, HashSet)]
    found = iter(BankMatcher(ctx.store, ctx.settings).match_many(sets) if sets else [])
    out = []
    for _, item in parsed:
        if not isinstance(item, HashSet):
            out.append([])
            continue
        out.append([{"case": c.case, "algorithm": c.algorithm, "distance": c.distance,
                     "distances": c.distances, "variant": c.variant} for c in next(found)])
    return out


def _queries(hs: HashSet) -> list[dict[str, Any]]:
    """The lookup API's queries for one hash set (a video's frames included)."""
    queries = [{"algorithm": "sha256", "value": hs.sha256}] if hs.sha256 else []
    queries += [{"algorithm": "md5", "value": hs.md5}] if hs.md5 else []
    for picture in (hs, *[f.as_hashset() for f in hs.frames]):
        for name, value in picture.hashes.items():
            query: dict[str, Any] = {"algorithm": name, "value": value}
            if name in picture.quality:
                query["quality"] = picture.quality[name]
            queries.append(query)
    return queries


def _by_reference(parsed: list[tuple[int, Any]], search: Any) -> list[list[dict[str, Any]]]:
    """Matches of each line by match reference, from ``search(queries) -> lookup results`` (the
    service's answer, or a synced copy's): each reference once, at its smallest distance."""
    spans, queries = [], []
    for _, item in parsed:
        start = len(queries)
        if isinstance(item, HashSet):
            queries.extend(_queries(item))
        spans.append((start, len(queries)))
    results = search(queries) if queries else []
    out = []
    for first, end in spans:
        best: dict[str, dict[str, Any]] = {}
        for result in results[first:end]:
            for match in result["matches"]:
                ref = match["match_ref"]
                if ref not in best or match["distance"] < best[ref]["distance"]:
                    best[ref] = {"match_ref": ref, "algorithm": match["algorithm"],
                                 "distance": match["distance"]}
        out.append(sorted(best.values(), key=lambda m: (m["distance"], m["match_ref"])))
    return out


def _synced(parsed: list[tuple[int, Any]], path: str) -> list[list[dict[str, Any]]]:
    """Matches of each line in a bank copy kept by ``hashsvc sync``."""
    from hashsvc.bank_sync import LocalBank

    return _by_reference(parsed, LocalBank.load(path).search)


def _remote(parsed: list[tuple[int, Any]], url: str, key: str | None
            ) -> list[list[dict[str, Any]]]:
    """Matches of each line from a service's ``POST /v1/lookup`` (platform key)."""
    if not key:
        raise InputError("--url needs --key (or HASHSVC_API_KEY): a platform key")
    return _by_reference(parsed, lambda queries: _post_lookups(url, key, queries))


def _post_lookups(url: str, key: str, queries: list[dict[str, Any]]) -> list[Any]:
    """The service's results for every query, sent in batches."""
    import requests

    results: list[Any] = []
    for start in range(0, len(queries), REMOTE_BATCH):
        try:
            response = requests.post(url.rstrip("/") + "/v1/lookup", timeout=120,
                                     headers={"Authorization": f"Bearer {key}"},
                                     json={"hashes": queries[start:start + REMOTE_BATCH]})
        except requests.RequestException as exc:
            raise InputError(f"the service did not answer: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise InputError(f"the service answered {response.status_code}: "
                             f"{response.text[:300]}")
        results.extend(response.json()["results"])
    return results
