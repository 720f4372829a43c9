"""One error hierarchy for hashsvc: every failure the code expects is one of these."""

from __future__ import annotations


class HashsvcError(Exception):
    """Base of every error hashsvc raises on purpose."""

    #: Short machine-readable code used in reports and JSON error bodies.
    code = "error"


class ConfigError(HashsvcError):
    """A setting is missing or has a value that cannot be used."""

    code = "config"


class InputError(HashsvcError):
    """Input supplied by a user (a hash line, a case reference, a request) is malformed."""

    code = "bad_input"


class SourceError(HashsvcError):
    """An evidence source or one of its members cannot be read safely."""

    code = "source"


class LimitExceeded(SourceError):
    """A safety bound (size, ratio, depth, member count) was hit: a bomb or a huge file."""

    code = "limit"


class DecodeError(HashsvcError):
    """Bytes that should be an image (or video) cannot be decoded."""

    code = "decode"


class UnsupportedFormat(DecodeError):
    """The bytes are not in any format hashsvc decodes."""

    code = "unsupported"


class StoreError(HashsvcError):
    """The store refused an operation (unknown case, integrity problem)."""

    code = "store"


class NotFound(StoreError):
    """A case, scan or other record does not exist."""

    code = "not_found"


def loggable(exc: BaseException) -> BaseException:
    """The exception to put in a log: ``exc`` itself, unless a database error is in its
    chain, whose text carries the statement's parameters and PostgreSQL's DETAIL line (hash
    values, case references, key digests: nothing a log may hold). Then a stand-in with the
    same traceback and type names, the first line of the database's message and the SQL
    statement only (parameterised: no values)."""
    from sqlalchemy.exc import StatementError

    chain, seen = [], set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        chain.append(link)
        link = link.__cause__ or link.__context__
    database = next((e for e in chain if isinstance(e, StatementError)), None)
    driver = next((e for e in chain if type(e).__module__.startswith("psycopg")), None)
    if database is None and driver is None:
        return exc
    orig = getattr(database, "orig", None) or driver
    first = (str(orig).strip().splitlines() or [""])[0] if orig is not None else ""
    statement = getattr(database, "statement", None)
    text = f"{type(exc).__name__}: database error ({type(orig).__name__}: {first})"
    if statement:
        text += f" [SQL: {' '.join(str(statement).split())[:2000]}]"
    return LoggedError(text).with_traceback(exc.__traceback__)


class LoggedError(Exception):
    """What a log records in place of an exception whose text carries data (see loggable)."""
