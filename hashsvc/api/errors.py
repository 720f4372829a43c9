"""One mapping from failures to JSON error responses ``{"error": CODE, "message": TEXT}``.

hashsvc's own errors and werkzeug's HTTP errors get their status and a short code; anything
else is logged here and answered with a bare 500, never a stack trace.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from hashsvc.errors import (ConfigError, DecodeError, HashsvcError, InputError,  # noqa: F401
                            LoggedError, NotFound, SourceError, StoreError, loggable)

#: Codes for the HTTP statuses the API answers with.
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "too_large",
              415: "unsupported_media_type", 429: "rate_limited", 500: "internal",
              503: "unavailable"}

#: Status of each hashsvc error class; the first that matches wins, so subclasses come first.
STATUSES: tuple[tuple[type[HashsvcError], int], ...] = (
    (NotFound, 404), (StoreError, 409), (InputError, 400), (SourceError, 400),
    (DecodeError, 400), (ConfigError, 500),
)


class LineError(InputError):
    """One item of a list in a request body is malformed; ``index`` says which (from 0)."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"item {index}: {message}")
        self.index = index


class Conflict(StoreError):
    """The request conflicts with the record's state (a withdrawn case, a finished scan)."""

    code = "conflict"


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    """A JSON error body with its status."""
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="hashsvc"'
    return response


def _http_error(exc: HTTPException) -> Response:
    """A werkzeug HTTP error (404 route, 405, 413 body, 401/403/429 from auth) as JSON."""
    status = exc.code or 500
    response = error_response(status, HTTP_CODES.get(status, "error"),
                              exc.description or exc.name)
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.valid_methods or ())
    return response


def _hashsvc_error(exc: HashsvcError) -> Response:
    """One of hashsvc's own errors, with the status its class calls for."""
    status = next((s for cls, s in STATUSES if isinstance(exc, cls)), 400)
    if status >= 500:
        return _unexpected(exc)
    extra = {"index": exc.index} if isinstance(exc, LineError) else {}
    return error_response(status, exc.code, str(exc), **extra)


def _unexpected(exc: Exception) -> Response:
    """An unforeseen failure: logged here (without the values a database error carries), a
    bare 500 to the caller."""
    from flask import current_app

    current_app.logger.error("unhandled error", exc_info=loggable(exc))
    return error_response(500, "internal", "internal error")


def register_error_handlers(app: Flask) -> None:
    """Install the JSON error handlers on ``app``."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(HashsvcError, _hashsvc_error)
    app.register_error_handler(Exception, _unexpected)


def json_body(kind: type, required: bool = True) -> Any:
    """The request's JSON body, which must be a ``kind`` (dict or list); 400 otherwise.

    An empty body is ``kind()`` when not ``required``. A body that is not JSON is a 400 and a
    body that is not declared JSON a 415 (Flask's own checks).
    """
    from flask import request

    if not required and not request.get_data(cache=True):
        return kind()
    try:
        data = request.get_json()
    except RecursionError:  # '[[[[...' within the size limit: the parser's own recursion
        raise InputError("the request body nests JSON too deeply") from None
    if not isinstance(data, kind):
        raise InputError(f"the request body must be a JSON {'object' if kind is dict else 'array'}")
    check_text(data)
    return data


#: Keys whose text values the server never stores, audits or compares: a hash line's "file"
#: (its name on the victim's device, which `hashsvc hash` writes with lone surrogates for a
#: name that is not valid UTF-8) may hold any text.
FREE_TEXT_KEYS = frozenset({"file"})


def check_text(data: Any) -> None:
    """Refuse (400) text that no database stores and no audit entry can record: a NUL
    character (PostgreSQL's text refuses it) or a lone surrogate (no UTF-8 for it), in any
    key or string value of a request body, wherever it is nested. The error names the field,
    and the item of a list of lines (``index``) as a bad hash line's own error does."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                _check_string(key, path + (key,))
                if key not in FREE_TEXT_KEYS:
                    stack.append((item, path + (key,)))
        elif isinstance(value, list):
            stack.extend((item, path + (i,)) for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_string(value, path)


def _check_string(text: str, path: tuple[Any, ...]) -> None:
    """InputError (LineError inside a list of lines) for text that cannot be stored."""
    if "\x00" in text:
        why = "may not contain NUL characters"
    else:
        try:
            text.encode("utf-8")
            return
        except UnicodeEncodeError:
            why = "must be valid Unicode (a lone surrogate was sent)"
    if path and isinstance(path[0], int):  # a list body: hash lines
        index, field = path[0], path[1:]
    elif len(path) > 1 and path[0] == "lines" and isinstance(path[1], int):
        index, field = path[1], path[2:]
    else:
        index, field = None, path
    name = ".".join(str(step) for step in field) or "text"
    if index is not None:
        raise LineError(index, f"{name} {why}")
    raise InputError(f"{name} {why}")


#: The largest integer the API takes in a query or a body (fits every database's BIGINT).
BIG = 2 ** 62 - 1


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; 400 otherwise."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise InputError(f"{name} must be from {low} to {high}")
    return value
