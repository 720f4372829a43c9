"""Signed documents: canonical JSON, the deployment's Ed25519 report key, signing and checking.

A deletion report (``hashsvc.deletion_report``) is a JSON *document* wrapped in an *envelope*::

    {"document": {...},
     "signature": {"algorithm": "Ed25519", "key_id": "…", "public_key": "<base64 raw 32 bytes>",
                   "value": "<base64 signature over canonical(document)>",
                   "digests_value": "<base64 signature over the document's section digests>",
                   "signed_at": "…"}}

``value`` is an Ed25519 signature over :func:`canonical_json` of the document, so anybody can
check it with any Ed25519 implementation. Inside the document, ``digests`` holds a SHA-256 per
section and per file line (:func:`section_digests`); ``digests_value`` signs those digests on
their own. When a document no longer matches its signature, the digests name what changed: where
``digests_value`` still verifies they are the signed originals and every differing section or
line is named exactly; where it does not, the digests were edited too, and the verdict says so.
``signed_at`` is informational (the signed time is the document's ``generated_at``).

Canonical JSON follows RFC 8785 (JCS): object keys sorted by their UTF-16 code units, no
insignificant whitespace, strings as UTF-8 with only ``"``, ``\\`` and control characters
escaped, and numbers as ECMAScript prints them. Policy for numbers: integers must lie within
±(2**53 − 1) (what every JSON reader holds exactly); floats must be finite and are printed as
ECMAScript's shortest round-trip form (``0.5``, ``600`` for 600.0, ``1e-7``). Strings must be
valid Unicode: a lone surrogate (a file name that was not UTF-8) is refused here, so documents
carry such names as hex bytes instead (``hashsvc.deletion_report``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hashsvc.errors import ConfigError, InputError
from hashsvc.secretfiles import create_secret_file, read_secret_file

ALGORITHM = "Ed25519"
#: Largest integer magnitude canonical JSON accepts (IEEE 754 doubles hold these exactly).
MAX_SAFE_INTEGER = 2**53 - 1
#: Prefix of the message that ``digests_value`` signs: never the same bytes as a document.
DIGESTS_CONTEXT = b"hashsvc section digests v1\n"
#: Hex digits of the key id (SHA-256 of the raw public key).
KEY_ID_HEX = 16


# --- canonical JSON ------------------------------------------------------------------------------

def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value (dicts, lists, str, int, float, bool,
    None); ValueError for anything JSON cannot hold exactly (see the module's number policy)."""
    parts: list[str] = []
    _emit(value, parts)
    return "".join(parts).encode("utf-8")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _string(text: str) -> str:
    """A JCS string literal: only '"', '\\' and C0 controls escaped; the rest as it is."""
    for ch in text:
        if "\ud800" <= ch <= "\udfff":
            raise ValueError(f"string {text[:40]!r} holds a lone surrogate, not valid Unicode")
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(value: float) -> str:
    """ECMAScript's Number.prototype.toString of a number, as RFC 8785 section 3.2.2.3 asks."""
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is beyond ±(2**53-1), which JSON cannot carry "
                             "exactly; write it as a string")
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"{value} has no JSON form")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    text = repr(abs(value))  # Python's repr is the shortest round-trip form too
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # Position of the decimal point relative to the start of ``digits``: value = 0.d1d2… × 10^n.
    n = len(whole.lstrip("0")) if whole.strip("0") else -(len(frac) - len(frac.lstrip("0")))
    n += int(exp or 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        body = (digits if k == 1 else digits[0] + "." + digits[1:]) + \
            ("e+" if e >= 0 else "e-") + str(abs(e))
    return sign + body


def _emit(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, (int, float)):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")  # noqa: TRY004
        out.append("{")
        for i, key in enumerate(sorted(keys, key=lambda k: k.encode("utf-16-be",
                                                                      "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _emit(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _emit(item, out)
        out.append("]")
    else:
        raise ValueError(f"{type(value).__name__} is not a JSON value")


def digest(value: Any) -> str:
    """Hex SHA-256 of a value's canonical JSON."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


# --- section digests -----------------------------------------------------------------------------

#: The list section whose entries are digested one by one, and the field that names an entry.
LINES = "files"
LINE_LABEL = "where_text"


def section_digests(document: Mapping[str, Any]) -> dict[str, Any]:
    """The ``digests`` a document carries: SHA-256 of each top-level entry but ``digests``, and
    of each file line separately, with the line's location as signed (to name it if removed)."""
    sections = {key: digest(value) for key, value in document.items()
                if key not in ("digests", LINES)}
    out: dict[str, Any] = {"algorithm": "sha256", "sections": sections}
    if LINES in document:
        lines = document[LINES]
        if not isinstance(lines, list):
            raise ValueError(f"{LINES} must be a list")
        out[LINES] = [{"digest": digest(line),
                       "where": line.get(LINE_LABEL) if isinstance(line, Mapping) else None}
                      for line in lines]
    return out


def with_digests(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` carrying its section digests (replacing any it had)."""
    body = {k: v for k, v in document.items() if k != "digests"}
    return {**body, "digests": section_digests(body)}


# --- keys ----------------------------------------------------------------------------------------

def _serialization() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization


def raw_public_key(key: Any) -> bytes:
    """The 32 raw bytes of an Ed25519 public key (or of a private key's public half)."""
    ser = _serialization()
    public = key.public_key() if hasattr(key, "private_bytes") else key
    return public.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


def key_id(public_raw: bytes) -> str:
    """The id of a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:KEY_ID_HEX]


def generate_key() -> Any:
    """A new Ed25519 private key (tests, and the first use of a deployment)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def load_or_create_signing_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in the PEM file ``path``, created (mode 0600, atomically) if
    missing; ConfigError for a file others can read, or one that is not such a key."""
    key_path = Path(path)
    if not key_path.exists():
        _create_key_file(key_path)
    return load_signing_key(key_path)


def load_signing_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in an existing PEM file (refused if group/other may read it)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_path = Path(path)
    pem = read_secret_file(key_path, "report signing key",
                           "others could sign reports in this deployment's name")
    try:
        key = _serialization().load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"report signing key {key_path} is not an unencrypted PEM private "
                          f"key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"report signing key {key_path} is not an Ed25519 key")
    return key


def _create_key_file(path: Path) -> None:
    """Create a new key file at ``path`` unless one appeared meanwhile."""
    ser = _serialization()
    pem = generate_key().private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                       ser.NoEncryption())
    create_secret_file(path, pem)


def deployment_key(settings: Any) -> Any:
    """The deployment's report signing key (``settings.report_signing_key_path``)."""
    return load_or_create_signing_key(settings.report_signing_key_path)


def public_key_entry(public_raw: bytes, status: str = "current") -> dict[str, Any]:
    """How GET /v1/keys lists one public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    ser = _serialization()
    pem = Ed25519PublicKey.from_public_bytes(public_raw).public_bytes(
        ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    return {"key_id": key_id(public_raw), "algorithm": ALGORITHM,
            "public_key": base64.b64encode(public_raw).decode("ascii"),
            "public_key_pem": pem, "status": status}


def public_keys_json(settings: Any, create: bool = True) -> dict[str, Any]:
    """The body of ``GET /v1/keys``: the current report key and any retired ones.

    Retired keys are public keys (PEM, ``*.pub.pem``) kept in the signing key's folder after a
    rotation, so that reports signed before it still verify against a published key. With
    ``create`` False a deployment without a key yet lists none instead of making one.
    """
    path = settings.report_signing_key_path
    keys: list[dict[str, Any]] = []
    if create or path.exists():
        keys.append(public_key_entry(raw_public_key(load_or_create_signing_key(path))))
    for pub in sorted(path.parent.glob("*.pub.pem")) if path.parent.is_dir() else []:
        try:
            raw = raw_public_key(load_public_key(pub.read_bytes()))
        except (OSError, InputError):
            continue
        if all(k["key_id"] != key_id(raw) for k in keys):
            keys.append(public_key_entry(raw, status="retired"))
    return {"algorithm": ALGORITHM, "keys": keys}


def load_public_key(data: bytes | str) -> Any:
    """An Ed25519 public key from PEM, from base64 of the raw 32 bytes, or from raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = _serialization().load_pem_public_key(raw)
            if not isinstance(key, Ed25519PublicKey):
                raise InputError("the public key is not an Ed25519 key")
            return key
        if len(raw) != 32:
            raw = base64.b64decode(raw.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise InputError(f"not an Ed25519 public key: {exc}") from exc


def trusted_keys_from(values: Iterable[Any]) -> dict[str, bytes]:
    """Trusted public keys by key id, from keys, raw bytes, PEM/base64 text, key entries or
    whole ``GET /v1/keys`` bodies."""
    out: dict[str, bytes] = {}
    for value in values:
        if isinstance(value, Mapping) and "keys" in value:
            out.update(trusted_keys_from(value["keys"]))
            continue
        if isinstance(value, Mapping):
            value = value.get("public_key") or value.get("public_key_pem") or ""
        is_key = hasattr(value, "public_bytes") or hasattr(value, "private_bytes")
        raw = raw_public_key(value if is_key else load_public_key(value))
        out[key_id(raw)] = raw
    return out


# --- signing -------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign_document(document: Mapping[str, Any], key: Any,
                  signed_at: datetime | None = None) -> dict[str, Any]:
    """The signed envelope of ``document`` (its digests added or refreshed first)."""
    doc = with_digests(document)
    raw = raw_public_key(key)
    when = (signed_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "document": doc,
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": key_id(raw),
            "public_key": _b64(raw),
            "value": _b64(key.sign(canonical_json(doc))),
            "digests_value": _b64(key.sign(DIGESTS_CONTEXT + canonical_json(doc["digests"]))),
            "signed_at": when.isoformat().replace("+00:00", "Z"),
        },
    }


def document_sha256(envelope: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical document: what a rendering or a later report cites."""
    return digest(envelope["document"])


# --- verification --------------------------------------------------------------------------------

@dataclass
class Verdict:
    """What :func:`verify_document` found.

    ``valid``: the signature verifies over the document as it is, and the key is trusted (or no
    trusted keys were given: ``trusted`` is then None and the key was only the file's own).
    ``changes``: what differs from what was signed, one dict per finding (section, index,
    where, what). ``problems``: sentences for a person, most important first.
    """

    valid: bool
    key_id: str | None = None
    trusted: bool | None = None
    signed_at: str | None = None
    report_type: str | None = None
    report_id: str | None = None
    document_sha256: str | None = None
    digests_authentic: bool | None = None
    changes: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "key_id": self.key_id, "trusted": self.trusted,
                "signed_at": self.signed_at, "report_type": self.report_type,
                "report_id": self.report_id, "document_sha256": self.document_sha256,
                "digests_authentic": self.digests_authentic, "changes": self.changes,
                "problems": self.problems}

    def summary(self) -> str:
        """A few lines for a terminal (names from evidence cannot emit control characters)."""
        head = (f"VALID: signed by key {self.key_id}" if self.valid
                else f"INVALID (signing key {self.key_id or 'unknown'})")
        if self.valid and self.trusted is None:
            head += " (checked against the key in the file only: compare the key id with " \
                    "GET /v1/keys of the deployment that issued it)"
        elif self.valid:
            head += " (a trusted key)"
        lines = [head]
        if self.report_type or self.report_id:
            lines.append(f"  report {self.report_type or '?'} {self.report_id or '?'}; "
                         f"document sha256 {self.document_sha256 or '?'}")
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(_printable(line) for line in lines)


def _printable(text: str) -> str:
    """Control and format characters (terminal escapes, bidi overrides) as <U+XXXX>."""
    return "".join(f"<U+{ord(ch):04X}>" if unicodedata.category(ch)[0] == "C" else ch
                   for ch in text)


def _verify(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def _unb64(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def verify_document(envelope: Any, trusted_public_keys: Iterable[Any] | None = None
                    ) -> Verdict:
    """Check an envelope's signature and say what changed when it fails.

    ``trusted_public_keys``: keys to accept (see :func:`trusted_keys_from` for the forms); a
    signature by any other key is refused even where it verifies, since anybody can re-sign an
    edited document with a key of their own. None checks against the file's own key only.
    """
    if not isinstance(envelope, Mapping) or not isinstance(envelope.get("document"), Mapping) \
            or not isinstance(envelope.get("signature"), Mapping):
        return Verdict(False, problems=[('not a signed report: expected an object with '
                                         '"document" and "signature"')])
    doc, sig = envelope["document"], envelope["signature"]
    verdict = Verdict(False, signed_at=_str(sig.get("signed_at")),
                      report_type=_str(doc.get("report_type")),
                      report_id=_str(doc.get("report_id")))
    try:
        doc_bytes = canonical_json(doc)
        verdict.document_sha256 = hashlib.sha256(doc_bytes).hexdigest()
    except ValueError as exc:
        verdict.problems.append(f"the document is not canonical JSON: {exc}")
        return verdict
    if sig.get("algorithm") != ALGORITHM:
        verdict.problems.append(f"unknown signature algorithm {sig.get('algorithm')!r}")
        return verdict
    public_raw = _unb64(sig.get("public_key"))
    value = _unb64(sig.get("value"))
    if public_raw is None or len(public_raw) != 32:
        verdict.problems.append("the signature block carries no valid Ed25519 public key")
        return verdict
    verdict.key_id = key_id(public_raw)
    if sig.get("key_id") != verdict.key_id:
        verdict.problems.append(
            f"the signature block names key id {sig.get('key_id')!r} but carries the public "
            f"key whose id is {verdict.key_id}: the key was swapped")
    trusted: dict[str, bytes] | None = None
    if trusted_public_keys is not None:
        try:
            trusted = trusted_keys_from(trusted_public_keys)
        except InputError as exc:
            verdict.problems.append(f"a trusted key could not be read: {exc}")
            trusted = {}
        verdict.trusted = verdict.key_id in trusted
        if not verdict.trusted:
            verdict.problems.insert(0, (
                f"signed by key {verdict.key_id}, which is not a trusted key "
                f"(trusted: {', '.join(sorted(trusted)) or 'none'}): the report was re-signed "
                "by someone else, or comes from another deployment"))
    signature_ok = value is not None and _verify(public_raw, value, doc_bytes)
    if not signature_ok:
        verdict.problems.append(
            "the signature does not match the document" if value is not None else
            "the signature value is missing or not base64")
    # Say what changed, from the digests (authentic where their own signature holds).
    changes, digests_ok = _changes(doc, sig, public_raw)
    verdict.digests_authentic = digests_ok
    verdict.changes = changes
    verdict.problems += [c["what"] for c in changes]
    if not signature_ok and not any(c["section"] != "digests" or c["index"] is not None
                                    for c in changes):
        verdict.problems.append(
            "every section still matches the digests in the document: either the signature "
            "or key was replaced, or sections were edited and their digests recomputed to "
            "match")
    verdict.valid = (signature_ok and not changes and verdict.trusted is not False
                     and sig.get("key_id") == verdict.key_id)
    return verdict


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _changes(doc: Mapping[str, Any], sig: Mapping[str, Any], public_raw: bytes
             ) -> tuple[list[dict[str, Any]], bool]:
    """Sections and lines whose digest differs from the document's ``digests``; and whether
    those digests are authentic (their own signature, ``digests_value``, verifies)."""
    stated = doc.get("digests")
    if not isinstance(stated, Mapping):
        return [{"section": "digests", "index": None, "where": None,
                 "what": "the document's digests are missing, so what changed cannot be "
                         "named"}], False
    dv = _unb64(sig.get("digests_value"))
    try:
        authentic = dv is not None and _verify(public_raw, dv,
                                               DIGESTS_CONTEXT + canonical_json(stated))
        actual = section_digests({k: v for k, v in doc.items() if k != "digests"})
    except (ValueError, AttributeError) as exc:
        return [{"section": "digests", "index": None, "where": None,
                 "what": f"the document's sections cannot be digested: {exc}"}], False
    out: list[dict[str, Any]] = []
    if not authentic:
        out.append({"section": "digests", "index": None, "where": None,
                    "what": "the digests themselves were edited, or the signature or key "
                            "replaced: their own signature (digests_value) fails, so what "
                            "follows compares against digests that may not be the signed ones"})
    was = stated.get("sections") if isinstance(stated.get("sections"), Mapping) else {}
    for name in sorted(set(was) | set(actual["sections"])):
        if name not in actual["sections"]:
            what = f"section {name!r} was removed"
        elif name not in was:
            what = f"section {name!r} was added"
        elif was[name] != actual["sections"][name]:
            what = f"section {name!r} changed"
        else:
            continue
        out.append({"section": name, "index": None, "where": None, "what": what})
    out += _line_changes(stated.get(LINES), actual.get(LINES), doc.get(LINES))
    return out, authentic


def _line_changes(stated: Any, actual: Any, lines: Any) -> list[dict[str, Any]]:
    """Which file lines differ from their signed digests, named by index and location."""
    stated = stated if isinstance(stated, list) else []
    actual = actual or []
    if stated == actual:
        return []

    def entry(items: list[Any], i: int) -> tuple[str | None, str | None]:
        item = items[i] if i < len(items) and isinstance(items[i], Mapping) else {}
        return _str(item.get("digest")), _str(item.get("where"))

    out: list[dict[str, Any]] = []
    signed = [entry(stated, i)[0] for i in range(len(stated))]
    now = [entry(actual, i)[0] for i in range(len(actual))]
    if sorted(filter(None, signed)) == sorted(filter(None, now)):
        return [{"section": LINES, "index": None, "where": None,
                 "what": f"the {LINES} lines were reordered"}]
    if len(signed) != len(now):
        out.append({"section": LINES, "index": None, "where": None,
                    "what": f"the report lists {len(now)} lines in {LINES}; it was signed "
                            f"with {len(signed)}"})
        for i, d in enumerate(signed):
            if d not in now:
                out.append({"section": LINES, "index": i, "where": entry(stated, i)[1],
                            "what": f"{LINES}[{i}] ({entry(stated, i)[1]}) as signed is missing "
                                    "or was changed"})
        for j, d in enumerate(now):
            if d not in signed:
                out.append({"section": LINES, "index": j, "where": entry(actual, j)[1],
                            "what": f"{LINES}[{j}] ({entry(actual, j)[1]}) is not as signed "
                                    "(changed or added)"})
        return out
    for i, (d_signed, d_now) in enumerate(zip(signed, now)):
        if d_signed == d_now:
            continue
        where_signed, where_now = entry(stated, i)[1], entry(actual, i)[1]
        what = f"{LINES}[{i}] ({where_now}) changed"
        if where_signed != where_now:
            what += f"; it was signed as {where_signed}"
        out.append({"section": LINES, "index": i, "where": where_now, "what": what})
    return out


def load_envelope(path: str | os.PathLike[str]) -> Any:
    """A signed report read from a JSON file (InputError where it is not JSON)."""
    try:
        with open(path, "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON report ({exc})") from exc
