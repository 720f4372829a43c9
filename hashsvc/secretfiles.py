"""Key files: created once, atomically, readable by their owner only."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from hashsvc.errors import ConfigError


def create_secret_file(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` (mode 0600) and link it into place unless a file appeared
    there meanwhile: of two processes racing, both end up reading the same complete file and
    neither can see a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if the name exists
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def read_secret_file(path: Path, what: str, risk: str) -> bytes:
    """The bytes of a key file, refused (ConfigError) unless it is a regular file that only
    its owner may read or write. ``what`` names the key, ``risk`` says what a looser mode
    would allow, in the message."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{what} {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(f"{what} {path} has mode {stat.S_IMODE(info.st_mode):04o}: "
                              f"{risk}; run chmod 600 {path}")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc
