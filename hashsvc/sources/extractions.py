"""Phone extractions and cloud exports that are folders (an iOS backup, ...): detection.

Filled in by the extraction readers; until then no folder is recognised and every folder is
read as a plain folder.
"""

from __future__ import annotations

from hashsvc.sources.base import Limits, Source


def detect_folder(path: str, limits: Limits) -> Source | None:
    """The reader for a folder that is a known extraction or export, or None."""
    return None
