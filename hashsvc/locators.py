"""Locators: a chain of links naming one file anywhere inside an evidence source.

A file inside an archive inside a directory is named by the chain
``fs:dcim.zip -> zip:IMG_1.jpg``; its display path is ``dcim.zip/IMG_1.jpg``. Member names
come from hostile evidence, so display names are neutralised (no absolute paths, no ``..``,
no control characters) while the raw name is kept for the record.
"""

from __future__ import annotations

import json
import posixpath
import unicodedata
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Link:
    """One step of a locator: how to get from the container to the next object."""

    kind: str  # "fs", "zip", "tar", "7z", "gzip", "bz2", "xz", "partition", "tsk", "s3", ...
    name: str  # the raw member name or relative path, exactly as found
    # Extra facts as sorted (name, text) pairs: inode, deleted ("true"/"false"), version id,
    # MAC times. They are part of the locator's identity (see Locator.key).
    attrs: tuple[tuple[str, str], ...] = field(default=())

    @property
    def display(self) -> str:
        """Name safe to show and to join into a path: no traversal, no control characters."""
        return safe_name(self.name)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able form."""
        out: dict[str, object] = {"kind": self.kind, "name": self.name}
        if self.attrs:
            out["attrs"] = dict(self.attrs)
        return out


@dataclass(frozen=True)
class Locator:
    """A chain of links from the root of a source to one file."""

    links: tuple[Link, ...]

    def child(self, link: Link) -> "Locator":
        """The locator of an object inside this one."""
        return Locator(self.links + (link,))

    @property
    def path(self) -> str:
        """Display path relative to the source root, archive members joined by '/'."""
        return "/".join(link.display for link in self.links)

    @property
    def depth(self) -> int:
        """How many containers (archives) this object is nested in."""
        return sum(1 for link in self.links if link.kind != "fs")

    def key(self) -> str:
        """Stable, unique string for the database (unique per scan and locator)."""
        # ASCII escapes keep names that are not valid UTF-8 (surrogate-escaped bytes from the
        # file system) storable in any database, and round-trip through from_key.
        # Attributes (an inode, a version id, a deleted flag) are part of the identity: two
        # deleted files may share a name, and two versions of an S3 object always do.
        return json.dumps([[l.kind, l.name, dict(l.attrs)] if l.attrs else [l.kind, l.name]
                           for l in self.links], ensure_ascii=True, separators=(",", ":"))

    def to_list(self) -> list[dict[str, object]]:
        """Plain JSON-able form."""
        return [link.to_dict() for link in self.links]

    @classmethod
    def from_key(cls, key: str) -> "Locator":
        """Inverse of :meth:`key`."""
        return cls(tuple(Link(step[0], step[1],
                              tuple(sorted(step[2].items())) if len(step) > 2 else ())
                         for step in json.loads(key)))

    def attr(self, name: str) -> str | None:
        """The innermost value of an attribute along the chain (None where no link has it)."""
        for link in reversed(self.links):
            for key, value in link.attrs:
                if key == name:
                    return value
        return None


def is_unsafe_name(name: str) -> bool:
    """True where a member name tries to escape its container (absolute, '..', drive letter)."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return True
    return any(part == ".." for part in norm.split("/"))


def safe_name(name: str) -> str:
    """A display form of a hostile member name: relative, no '..', printable."""
    norm = name.replace("\\", "/")
    if len(norm) > 1 and norm[1] == ":":
        norm = norm[2:]
    cleaned = "".join(
        ch if unicodedata.category(ch)[0] != "C" else "\N{REPLACEMENT CHARACTER}" for ch in norm
    )
    parts = [p for p in posixpath.normpath("/" + cleaned).split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "(unnamed)"
