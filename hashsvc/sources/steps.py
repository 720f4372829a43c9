"""The reading child's side of reader isolation (:mod:`hashsvc.sources.guarded`): heartbeats
and named steps, written to memory the scanning process shares with the child.

Readers call :func:`beat` during long legitimate work and :func:`checkpoint` / :func:`done`
around each step that may stall; outside a reading child these do nothing. This module
imports nothing of hashsvc's, so that the lowest layers (stream readers) can call it.
"""

from __future__ import annotations

from typing import Any

#: Bytes of the shared buffer that holds the name of the step the child is on.
MARKER_BYTES = 1024

_shared: Any = None  # in a reading child: (heartbeat counter, marker buffer)
_bad: dict[str, str] = {}  # steps that stalled or crashed an earlier child: why
_steps: list[bytes] = []  # the named steps the reader is in, innermost last
_position = 0  # the number of items the walk in this child has produced so far


def start(shared: Any, bad: dict[str, str]) -> None:
    """Make this process a reading child, given the shared memory and the steps to skip."""
    global _shared, _bad
    _shared, _bad = shared, dict(bad)
    _steps.clear()


def at(position: int) -> None:
    """The walk is about to produce its item number ``position`` (from 0)."""
    global _position
    _position = position


def in_reader() -> bool:
    """Whether this process is a reading child."""
    return _shared is not None


def beat() -> None:
    """Show that the reader is alive and busy (long legitimate work calls this now and then).
    Does nothing outside a reading child."""
    if _shared is not None:
        _shared[0].value += 1


def checkpoint(marker: str) -> str | None:
    """Name the step the reader is about to take, until the matching :func:`done` (steps
    nest); returns why it must be skipped instead (it stalled or crashed an earlier reading
    child; then there is no :func:`done` to call), else None. Outside a reading child: None."""
    if _shared is None:
        return None
    why = _bad.get(marker)
    if why is None:
        _steps.append(f"{_position}|{marker}".encode("utf-8", "surrogatepass")[
            :MARKER_BYTES - 1])
        _show_step()
    return why


def done() -> None:
    """The step named last is over."""
    if _shared is not None and _steps:
        _steps.pop()
        _show_step()


def _show_step() -> None:
    """Put the innermost step in the shared buffer (and count it as a heartbeat)."""
    counter, buffer = _shared
    buffer.value = _steps[-1] if _steps else b""
    counter.value += 1
