"""What the fuzz targets share (tests/test_fuzz.py, tests/test_fuzz_regressions.py): hypothesis
settings that scale from the bounded CI run to a long run on demand, byte mutations of real
files, hostile member names, and the guard that bounds each example's time and memory.

Environment (all optional):

``HASHSVC_FUZZ_EXAMPLES``
    examples per target instead of each target's default (a long run: 2000 or more);
``HASHSVC_FUZZ_SEED``
    draw examples at random from this seed instead of the fixed, derandomised sequence that
    CI runs (each seed explores other inputs; a failure prints the seed and the input);
``HASHSVC_FUZZ_TIMEOUT``
    seconds one example may take before it counts as a hang (default 20; the machine is noisy);
``HASHSVC_FUZZ_MEMORY_MB``
    address space one example may add to the test process (default 2048) before it counts as
    unbounded memory;
``HASHSVC_FUZZ_CRASHES``
    a folder: the input of every failing example is written there (named by its SHA-256), to
    be turned into a regression test.
"""

from __future__ import annotations

import faulthandler
import os
import resource
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st

F = TypeVar("F", bound=Callable[..., Any])

FUZZ_EXAMPLES = int(os.environ.get("HASHSVC_FUZZ_EXAMPLES") or 0)
FUZZ_SEED = os.environ.get("HASHSVC_FUZZ_SEED")
FUZZ_TIMEOUT = float(os.environ.get("HASHSVC_FUZZ_TIMEOUT") or 20)
FUZZ_MEMORY_MB = int(os.environ.get("HASHSVC_FUZZ_MEMORY_MB") or 2048)
FUZZ_CRASHES = os.environ.get("HASHSVC_FUZZ_CRASHES")


def fuzz(default_examples: int) -> Callable[[F], F]:
    """Hypothesis settings of one target: ``default_examples`` in CI, derandomised (the same
    inputs every run), no example database, no deadline (the guard bounds time instead)."""

    def decorate(test: F) -> F:
        wrapped = settings(
            max_examples=FUZZ_EXAMPLES or default_examples, deadline=None,
            derandomize=FUZZ_SEED is None, database=None,
            suppress_health_check=list(HealthCheck))(test)
        if FUZZ_SEED is not None:
            wrapped = seed(int(FUZZ_SEED))(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


# --- the guard: time and memory of one example ------------------------------------------------


class Overtime(BaseException):
    """An example ran past FUZZ_TIMEOUT. A BaseException, so that no ``except Exception`` in
    the code under test can swallow it."""


def _vm_bytes() -> int:
    """This process's mapped address space (VmSize)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


@contextmanager
def guarded(what: str = "example", timeout: float | None = None) -> Iterator[None]:
    """Bound one example: SIGALRM raises :class:`Overtime` after FUZZ_TIMEOUT seconds (a loop
    in Python); faulthandler ends the process with every thread's traceback after three times
    that (a hang inside C, which a signal cannot interrupt, must still end a CI run); and the
    address space may grow by FUZZ_MEMORY_MB at most (RLIMIT_AS), so a runaway allocation
    fails as a MemoryError, which the targets report as unbounded memory."""

    limit = FUZZ_TIMEOUT if timeout is None else timeout

    def alarm(_signum: int, _frame: Any) -> None:
        raise Overtime(f"{what} ran past {limit:g} s (a hang?)")

    old_handler = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _vm_bytes() + FUZZ_MEMORY_MB * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    faulthandler.dump_traceback_later(limit * 3, exit=True)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, old_handler)


@contextmanager
def keeping(what: str, data: bytes) -> Iterator[None]:
    """Write ``data`` to HASHSVC_FUZZ_CRASHES when the example fails (any exception)."""
    try:
        yield
    except BaseException:
        if FUZZ_CRASHES:
            import hashlib

            os.makedirs(FUZZ_CRASHES, exist_ok=True)
            name = f"{what}-{hashlib.sha256(data).hexdigest()[:16]}"
            with open(os.path.join(FUZZ_CRASHES, name), "wb") as fh:
                fh.write(data)
        raise


def caused_by_memory(exc: BaseException | None) -> bool:
    """Whether a MemoryError is anywhere in an exception's cause or context chain."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class Timer:
    """Elapsed wall-clock time of the slowest example, reported by the targets."""

    def __init__(self) -> None:
        self.slowest = 0.0
        self.count = 0

    @contextmanager
    def time(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.slowest = max(self.slowest, time.perf_counter() - start)
            self.count += 1


# --- mutations ----------------------------------------------------------------------------------

#: Integers that break size and offset arithmetic: zero, sign boundaries, all ones.
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
JUNK = (b"\x00" * 64, b"\xff" * 64, b"PK\x03\x04", b"\x1f\x8b\x08", b"7z\xbc\xaf\x27\x1c",
        b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"%PDF-1.7\n", b"BZh91AY&SY", b"ustar\x0000")

OPS = ("byte", "bits", "int", "field", "insert", "delete", "duplicate", "truncate", "junk")


@st.composite
def mutate(draw: st.DrawFn, base: bytes, fields: tuple[tuple[int, int], ...] = (),
           regions: tuple[tuple[int, int], ...] = (), max_ops: int = 6) -> bytes:
    """``base`` changed by 1 to ``max_ops`` mutations: byte and bit flips, interesting integers
    (huge declared sizes) written anywhere or into known size ``fields`` (offset, width),
    inserted junk or magic numbers, deleted and duplicated ranges, truncation. Offsets are
    drawn from ``regions`` (offset, length) as often as from the whole file: headers, tables
    and directories are where parsers break."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops), label="ops")):
        if not data:
            break
        op = draw(st.sampled_from(OPS if fields else tuple(o for o in OPS if o != "field")))
        spans = [(0, len(data))] + [(lo, n) for lo, n in regions if lo < len(data)]
        lo, n = draw(st.sampled_from(spans))
        at = draw(st.integers(lo, min(lo + n, len(data)) - 1))
        if op == "byte":
            data[at] = draw(st.integers(0, 255))
        elif op == "bits":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op in ("int", "field"):
            if op == "field":
                at, width = draw(st.sampled_from(fields))
            else:
                width = draw(st.sampled_from((1, 2, 4, 8)))
            order = draw(st.sampled_from(("little", "big")))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
            data[at:at + width] = value.to_bytes(width, order)[: max(0, len(data) - at)]
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(JUNK), st.binary(max_size=64)))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 256))]
        elif op == "duplicate":
            length = draw(st.integers(1, 512))
            data[at:at] = data[at:at + length]
        elif op == "truncate":
            del data[at:]
        else:  # junk over existing bytes
            junk = draw(st.sampled_from(JUNK))
            data[at:at + len(junk)] = junk
    return bytes(data)


# --- hostile names --------------------------------------------------------------------------------

#: Member names an attacker would try: traversal, absolute and drive paths, device names,
#: control and direction characters, normalisation tricks, very long names, empty names.
HOSTILE_NAMES = (
    "../../../../etc/passwd", "/etc/shadow", "..\\..\\Windows\\System32\\x.jpg", "C:\\x.jpg",
    "C:x.jpg", "a/../../b.jpg", "./././x.jpg", "", ".", "..", "/", "//", "a//b.jpg", "CON",
    "nul.jpg", "x" * 10_000, "d/" * 2000 + "deep.jpg", "\u202eexe.jpg", "\u200f\u200e.jpg",
    "e\u0301.jpg", "\u00e9.jpg", "\ufeffbom.jpg", "a\nb.jpg", "a\rb.jpg", "\x7f.jpg",
    "\U0001f4a5" * 100, "\u0000", "tab\tname.jpg", "dir/", "..../x.jpg", "\\\\server\\share\\x",
    "~/x.jpg", "$HOME/x.jpg", "%2e%2e%2fx.jpg", "\uff0e\uff0e/x.jpg", "a" * 255 + ".jpg",
)

_PIECES = ("..", ".", "", "a", "\\", "..\\", "/", "\u202e", "\u2024\u2024", "\x00", "\x1b[31m",
           "\ud7ff", "\ufffd", "IMG_0001.JPG")


def hostile_name() -> st.SearchStrategy[str]:
    """A member name: a known hostile one, arbitrary text, or hostile pieces joined."""
    return st.one_of(
        st.sampled_from(HOSTILE_NAMES),
        st.text(max_size=120),
        st.lists(st.sampled_from(_PIECES), min_size=1, max_size=10).map("/".join),
    )
