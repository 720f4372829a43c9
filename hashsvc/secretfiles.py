"""Key files: created once, atomically, readable by their owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


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
