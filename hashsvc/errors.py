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
