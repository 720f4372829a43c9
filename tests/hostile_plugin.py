"""A test-only Pillow plugin whose decoder misbehaves on purpose: the hostile inputs of
tests/test_isolation.py. Real crashers of libheif, libtiff or libavif are version-specific; this
format makes a decoder crash, hang or allocate without end deterministically.

A hostile file is MAGIC, then an action of 8 bytes, then anything. Loaded in decoding children
through the ``decode_plugins`` setting (``HASHSVC_DECODE_PLUGINS=<path of this file>``); it
registers the format with hashsvc.decode so that scans sniff and decode it like any image.
"""

from __future__ import annotations

import ctypes
import os
import time

from PIL import Image, ImageFile

from hashsvc.decode import register_format

MAGIC = b"\x89HOSTILE\r\n"

#: What the decoder does, by action name.
ACTIONS = ("abort", "segv", "sleep", "spin", "oom", "exit")


def hostile_bytes(action: str, salt: str = "") -> bytes:
    """A file whose decoding does ``action`` (``salt`` makes copies differ in their hashes)."""
    assert action in ACTIONS
    return MAGIC + action.encode().ljust(8) + salt.encode()


class HostileImageFile(ImageFile.ImageFile):
    """Opens like a 64x64 picture; decoding it misbehaves."""

    format = "HOSTILE"
    format_description = "hashsvc test decoder that crashes, hangs or exhausts memory"

    def _open(self) -> None:
        head = self.fp.read(len(MAGIC) + 8)
        if not head.startswith(MAGIC):
            raise SyntaxError("not a hostile file")
        self.action = head[len(MAGIC):].strip().decode()
        self._size = (64, 64)
        self._mode = "RGB"
        self.tile = []

    def load(self) -> object:
        action = self.action
        if action == "abort":  # a C library's assertion
            os.abort()
        if action == "segv":  # a wild pointer
            ctypes.string_at(0)
        if action == "exit":  # a library that calls exit()
            os._exit(3)
        if action == "sleep":  # blocked for ever without using the CPU (a lock, a pipe)
            while True:
                time.sleep(60)
        if action == "spin":  # an endless loop
            while True:
                pass
        if action == "oom":  # allocates as long as allocations succeed
            blocks = []
            while True:
                blocks.append(bytearray(64 << 20))
        raise OSError(f"unknown hostile action {action!r}")


def _accept(prefix: bytes) -> bool:
    return prefix.startswith(MAGIC)


Image.register_open(HostileImageFile.format, HostileImageFile, _accept)
Image.register_extension(HostileImageFile.format, ".hostile")
register_format("hostile", MAGIC, HostileImageFile.format)
