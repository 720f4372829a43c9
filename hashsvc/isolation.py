"""Decoder isolation: untrusted bytes are decoded in child processes under limits.

Image and video decoders (libjpeg, libpng, libtiff, libheif, libavif, libwebp, FFmpeg) are large
C libraries fed hostile input. A file that makes one crash, hang or allocate without end must
cost that file, never the process that scans. So every path that decodes evidence (embedded
scans, RQ batch jobs, ``hashsvc hash``) runs the decoding in an :class:`IsolatedPool`:

* each child process sets its own limits before its first file (``resource.setrlimit``): address
  space (``decode_memory_mb`` beyond what the process had mapped once started: a decoder's
  allocation past it fails, and Python's MemoryError becomes "the decoder exceeded its memory
  limit"), CPU time per file (``decode_cpu_seconds``, RLIMIT_CPU re-armed before each file: past
  it the kernel kills the child with SIGXCPU), file size 0 (a decoder cannot write files), a
  modest number of open files, and no core dumps;
* the parent enforces a wall-clock limit per file (``decode_timeout_seconds``): a child whose
  file runs past it is killed with SIGKILL. A video extends its own file's budgets by the video
  time budget (:func:`extend_budget`), since decoding a long video legitimately takes minutes;
* children stream one result per file, so when a child dies the parent knows which file it was
  on: that file becomes a failure (a crash is first retried once, in case the child died of
  something else), the rest of the child's files go to the next free child, and a fresh child
  takes the dead one's place.

The limits guard against decoder bugs (crashes, endless loops, runaway allocation); they are
not a sandbox against a decoder exploited to run code of the attacker's choosing.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import math
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any, Callable, Hashable, Sequence

from hashsvc.errors import HashsvcError

log = logging.getLogger(__name__)

#: Modules the forkserver imports once, so that each child it starts has them (the first pool
#: or reader to start the forkserver sets them; later settings have no effect).
FORKSERVER_PRELOAD = ("hashsvc.pipeline", "cv2")

#: Open files a decoding child may have beyond those it inherited.
EXTRA_OPEN_FILES = 64

#: A chunk this small (pickled) may be sent to a child still busy with its previous chunk: it
#: fits in the socket's buffer, so sending it never blocks (a larger one waits for an idle
#: child, which is reading).
PREFETCH_BYTES = 64 * 1024


class IsolationError(HashsvcError):
    """A decoding process could not be started (a configuration problem, not a file's fault)."""


@dataclass(frozen=True)
class DecodeLimits:
    """Limits on each decoding child; 0 turns a limit off."""

    memory_mb: int = 2048  # address space a child may map beyond what it had once started
    cpu_seconds: float = 30.0  # CPU time per file
    timeout_seconds: float = 60.0  # wall-clock time per file, enforced by the parent
    plugins: tuple[str, ...] = ()  # modules or .py files imported by each child first

    @classmethod
    def from_settings(cls, settings: Any) -> "DecodeLimits":
        """The limits that settings ask for (decode_memory_mb, decode_cpu_seconds, ...)."""
        plugins = str(getattr(settings, "decode_plugins", "") or "")
        return cls(memory_mb=int(settings.decode_memory_mb),
                   cpu_seconds=float(settings.decode_cpu_seconds),
                   timeout_seconds=float(settings.decode_timeout_seconds),
                   plugins=tuple(p.strip() for p in plugins.replace(",", ":").split(":")
                                 if p.strip()))


def time_limit_message(limits: DecodeLimits) -> str:
    """The error of a file whose decoding ran past the wall-clock limit."""
    return f"the decoder exceeded its time limit ({limits.timeout_seconds:g} s)"


def cpu_limit_message(limits: DecodeLimits) -> str:
    """The error of a file whose decoding ran past the CPU-time limit."""
    return f"the decoder exceeded its CPU-time limit ({limits.cpu_seconds:g} s)"


def memory_limit_message() -> str:
    """The error of a file whose decoding ran out of memory (in a child: past its limit)."""
    if _limits is not None and _limits.memory_mb > 0:
        return f"the decoder exceeded its memory limit ({_limits.memory_mb} MiB)"
    return "the decoder ran out of memory"


def exit_description(exitcode: int | None) -> str:
    """How a child process ended, from its exit code: "signal 11, SIGSEGV", "exit status 3"."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        return f"signal {-exitcode}, {name}"
    return f"exit status {exitcode}"


def crash_message(exitcode: int | None) -> str:
    """The error of a file on which the decoding process died."""
    return f"the decoder crashed the worker process ({exit_description(exitcode)})"


def start_method() -> str:
    """How to start decoding children here: fork when this process has a single thread (an RQ
    work-horse, the ``hashsvc hash`` command: cheap, and nothing to re-import), forkserver
    otherwise (forking a threaded process could copy a lock another thread holds)."""
    return "fork" if threading.active_count() == 1 else "forkserver"


# -- in the child ----------------------------------------------------------------------------

_channel: Connection | None = None  # set in a decoding child: the pipe to the parent
_limits: DecodeLimits | None = None


def in_child() -> bool:
    """Whether this process is a decoding child."""
    return _channel is not None


def extend_budget(seconds: float) -> None:
    """Give the file being decoded ``seconds`` more of wall-clock and CPU time (a video, whose
    decoder keeps its own time budget). Does nothing outside a decoding child."""
    if _channel is None or seconds <= 0:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if soft != resource.RLIM_INFINITY:
        soft += int(math.ceil(seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY
                                                 else min(soft, hard), hard))
    _channel.send(("x", float(seconds)))


def load_plugins(names: Sequence[str]) -> None:
    """Import plugin modules (a dotted name, or the path of a ``.py`` file) once each."""
    for name in names:
        if name.endswith(".py"):
            path = os.path.abspath(name)
            mod_name = "hashsvc_plugin_" + "".join(c if c.isalnum() else "_" for c in path)
            if mod_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load decoder plugin {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
        else:
            importlib.import_module(name)


def _mapped_bytes() -> int:
    """The address space this process has mapped now."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _apply_limits(limits: DecodeLimits) -> dict[str, int]:
    """Set this child's resource limits (the CPU limit is armed per file)."""
    applied: dict[str, int] = {}
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A decoder that writes a file gets EFBIG rather than SIGXFSZ (which would kill the child).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    nofile = max(fds, default=2) + 1 + EXTRA_OPEN_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    if limits.memory_mb > 0:
        # Relative to what is mapped once started: a work-horse forked from a worker holding a
        # large bank index, or a many-core machine's thread pools, map more before any file.
        base = _mapped_bytes()
        cap = base + limits.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        applied["base_mb"] = base // (1024 * 1024)
    return applied


def _arm_cpu(limits: DecodeLimits) -> None:
    """Allow the next file ``cpu_seconds`` of CPU time from now."""
    if limits.cpu_seconds <= 0:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(math.ceil(usage.ru_utime + usage.ru_stime + limits.cpu_seconds))
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY
                                             else min(soft, hard), hard))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the process that started it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main(conn: Connection, out: Connection, fn: Callable[[Any], Any],
                limits: DecodeLimits, initializer: Callable[[], None] | None) -> None:
    """A decoding child: set up, then answer each item of each chunk with one message."""
    global _channel, _limits
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    out.close()
    _die_with_parent()
    # Ctrl-C in a terminal reaches every process of the group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        load_plugins(limits.plugins)
        if initializer is not None:
            initializer()
        info = _apply_limits(limits)
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the scan
        conn.send(("init-error", traceback.format_exc()))
        return
    _channel, _limits = conn, limits
    conn.send(("ready", info))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for item in chunk:
            _arm_cpu(limits)
            try:
                msg: tuple[str, Any] = ("r", fn(item))
            except MemoryError:
                msg = ("f", memory_limit_message())
            except Exception as exc:  # noqa: BLE001 - a bug costs one item, not the child
                msg = ("f", f"the decoding process failed: {type(exc).__name__}: {exc}")
            try:
                conn.send(msg)
            except MemoryError:
                conn.send(("f", memory_limit_message()))
            except (EOFError, OSError):
                return
            except Exception as exc:  # noqa: BLE001 - an unpicklable result
                conn.send(("f", f"the decoding process failed: {type(exc).__name__}: {exc}"))


# -- in the parent ---------------------------------------------------------------------------

@dataclass
class Outcome:
    """What became of one item: its result, or why it has none."""

    key: Hashable
    item: Any
    result: Any = None
    failure: str | None = None  # the error message when the child gave no result


@dataclass
class _Job:
    """One item on its way through the pool."""

    key: Hashable
    item: Any
    retried: bool = False  # already re-run alone after its child crashed


@dataclass
class _Slot:
    """One child process and what it has been sent."""

    number: int
    proc: Any = None
    conn: Connection | None = None
    out: Connection | None = None  # read end of the child's stdout and stderr
    ready: bool = False
    jobs: deque[_Job] = field(default_factory=deque)  # sent, unanswered, in order
    chunks: deque[int] = field(default_factory=deque)  # unanswered items of each sent chunk
    started: float = 0.0  # when the child began jobs[0] (as far as this process can tell)
    extra: float = 0.0  # seconds jobs[0] was granted beyond the limit (a video)


class IsolatedPool:
    """Child processes that run ``fn(item)`` on untrusted input, under :class:`DecodeLimits`.

    Submit chunks of ``(key, item)``; :meth:`collect` returns :class:`Outcome` objects as they
    come, in no particular order. ``fn`` and ``initializer`` must be picklable (module-level).
    """

    def __init__(self, workers: int, fn: Callable[[Any], Any], limits: DecodeLimits,
                 method: str = "forkserver", initializer: Callable[[], None] | None = None,
                 preload: Sequence[str] = FORKSERVER_PRELOAD) -> None:
        self.workers = max(1, workers)
        self.fn = fn
        self.limits = limits
        self.initializer = initializer
        self.ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self.ctx.set_forkserver_preload(list(preload))
        self.slots = [_Slot(i) for i in range(self.workers)]
        self.backlog: deque[list[_Job]] = deque()
        self._head: tuple[list[_Job], Any] | None = None  # the first chunk waiting, pickled
        self.ready: list[Outcome] = []
        self.crashes = 0  # children that died on a file (killed ones included)
        self.started = 0  # children started
        self.closed = False

    # -- public ----------------------------------------------------------------------------

    @property
    def chunks_pending(self) -> int:
        """Chunks waiting or running (a requeued remainder counts as one more)."""
        return len(self.backlog) + sum(len(s.chunks) for s in self.slots)

    def submit(self, items: Sequence[tuple[Hashable, Any]]) -> None:
        """Queue one chunk of ``(key, item)`` pairs, to be run in order by one child."""
        if items:
            self.backlog.append([_Job(k, v) for k, v in items])
            self._dispatch()

    def collect(self) -> list[Outcome]:
        """Outcomes available now, waiting for at least one while any chunk is pending."""
        while not self.ready and self.chunks_pending:
            self._dispatch()
            self._poll()
        out, self.ready = self.ready, []
        return out

    def close(self) -> None:
        """Stop every child: idle ones are told to exit, busy ones are killed."""
        if self.closed:
            return
        self.closed = True
        for slot in self.slots:
            if slot.proc is None:
                continue
            if slot.jobs:
                slot.proc.kill()
            else:
                try:
                    assert slot.conn is not None
                    slot.conn.send(None)
                except (OSError, ValueError):
                    slot.proc.kill()
        deadline = time.monotonic() + 5
        for slot in self.slots:
            if slot.proc is not None:
                slot.proc.join(max(0.0, deadline - time.monotonic()))
                if slot.proc.is_alive():
                    slot.proc.kill()
                    slot.proc.join()
                self._forward_output(slot)
                self._release(slot)

    def __enter__(self) -> "IsolatedPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- children ----------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        """Start a fresh child in ``slot``."""
        parent_end, child_end = self.ctx.Pipe()
        out_read, out_write = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child_main, name=f"hashsvc-decode-{slot.number}",
                                args=(child_end, out_write, self.fn, self.limits,
                                      self.initializer), daemon=True)
        proc.start()
        child_end.close()
        out_write.close()
        os.set_blocking(out_read.fileno(), False)
        slot.proc, slot.conn, slot.out, slot.ready = proc, parent_end, out_read, False
        self.started += 1

    def _release(self, slot: _Slot) -> None:
        """Forget a dead child's process and pipes."""
        for conn in (slot.conn, slot.out):
            if conn is not None:
                conn.close()
        if slot.proc is not None:
            slot.proc.close()
        slot.proc = slot.conn = slot.out = None
        slot.ready = False

    def _dispatch(self) -> None:
        """Hand waiting chunks to idle children (and small ones to busy children, queued)."""
        if self.closed:
            raise IsolationError("the decoding pool is closed")
        for slot in self.slots:
            while self.backlog and len(slot.chunks) < 2:
                chunk = self.backlog[0]
                payload = self._pickled(chunk)
                if slot.chunks and len(payload) > PREFETCH_BYTES:
                    break
                if slot.proc is None:
                    self._start(slot)
                assert slot.conn is not None
                try:
                    slot.conn.send_bytes(payload)
                except (OSError, ValueError):
                    self._died(slot)  # never got this chunk: it stays first in the backlog
                    continue
                self.backlog.popleft()
                self._head = None
                if not slot.chunks:
                    slot.started, slot.extra = time.monotonic(), 0.0
                slot.jobs.extend(chunk)
                slot.chunks.append(len(chunk))

    def _pickled(self, chunk: list[_Job]) -> Any:
        """The message that sends ``chunk`` (the first waiting one), pickled once."""
        if self._head is None or self._head[0] is not chunk:
            self._head = (chunk, ForkingPickler.dumps([job.item for job in chunk]))
        return self._head[1]

    def _deadline(self, slot: _Slot) -> float | None:
        """When the child's current item runs out of wall-clock time (None: no limit)."""
        if not slot.jobs or self.limits.timeout_seconds <= 0:
            return None
        return slot.started + self.limits.timeout_seconds + slot.extra

    def _poll(self) -> None:
        """Wait for messages, exits or a deadline, and deal with them."""
        deadlines = [d for d in (self._deadline(s) for s in self.slots) if d is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        waitables: list[Any] = []
        for slot in self.slots:
            if slot.proc is not None:
                waitables += [slot.conn, slot.proc.sentinel]
                if slot.out is not None:
                    waitables.append(slot.out)
        if waitables:
            wait(waitables, timeout)
        for slot in self.slots:
            if slot.proc is None:
                continue
            self._forward_output(slot)
            if not self._read(slot) or not slot.proc.is_alive():
                self._died(slot)
                continue
            deadline = self._deadline(slot)
            if deadline is not None and time.monotonic() >= deadline:
                self._timed_out(slot)

    def _read(self, slot: _Slot) -> bool:
        """Handle every message waiting from the child; False once its pipe is closed."""
        assert slot.conn is not None
        try:
            while slot.conn.poll():
                kind, value = slot.conn.recv()
                if kind == "ready":
                    slot.ready = True
                elif kind == "init-error":
                    self._fail_to_start(slot, value)
                elif kind == "x":
                    slot.extra += value
                else:
                    self._answered(slot, value if kind == "r" else None,
                                   value if kind == "f" else None)
        except (EOFError, OSError):
            return False
        return True

    def _answered(self, slot: _Slot, result: Any, failure: str | None) -> None:
        """The child finished its current item."""
        job = slot.jobs.popleft()
        self.ready.append(Outcome(job.key, job.item, result, failure))
        slot.chunks[0] -= 1
        if slot.chunks[0] == 0:
            slot.chunks.popleft()
        slot.started, slot.extra = time.monotonic(), 0.0

    def _timed_out(self, slot: _Slot) -> None:
        """Kill a child whose current item ran past its wall-clock limit."""
        culprit = slot.jobs[0]
        assert slot.proc is not None
        slot.proc.kill()
        slot.proc.join()
        self._read(slot)  # an answer sent just before the kill still counts
        self._died(slot, timed_out=culprit)

    def _died(self, slot: _Slot, timed_out: _Job | None = None) -> None:
        """A child is gone: fail or retry the item it was on, requeue the rest, replace it."""
        assert slot.proc is not None
        if timed_out is None:
            slot.proc.join(5)
            if slot.proc.is_alive():  # its pipe broke but it lives on: make sure
                slot.proc.kill()
                slot.proc.join()
            self._read(slot)
        exitcode = slot.proc.exitcode
        self._forward_output(slot)
        if not slot.ready:
            self._fail_to_start(slot, f"it exited before it was ready ({crash_message(exitcode)})")
        jobs = list(slot.jobs)
        slot.jobs.clear()
        slot.chunks.clear()
        self._release(slot)
        if not jobs:
            return  # it died idle (killed from outside): a fresh child takes its place
        self.crashes += 1
        culprit, rest = jobs[0], jobs[1:]
        if rest:
            self.backlog.appendleft(rest)
        if timed_out is not None:
            if culprit is timed_out:
                log.warning("decoding %s ran past %g s: killed", culprit.key,
                            self.limits.timeout_seconds)
                self.ready.append(Outcome(culprit.key, culprit.item,
                                          failure=time_limit_message(self.limits)))
            else:
                self.backlog.appendleft([culprit])  # it had only just begun
            return
        if exitcode == -signal.SIGXCPU:
            message = cpu_limit_message(self.limits)
        else:
            message = crash_message(exitcode)
        log.warning("decoding %s: %s", culprit.key, message)
        if culprit.retried or exitcode == -signal.SIGXCPU:
            self.ready.append(Outcome(culprit.key, culprit.item, failure=message))
        else:
            # Alone this time: the child may have died of something else (the kernel's OOM
            # killer, an operator), and only a second death makes it this file's doing.
            self.backlog.appendleft([_Job(culprit.key, culprit.item, retried=True)])

    def _fail_to_start(self, slot: _Slot, why: str) -> None:
        """A child could not set up: every file would fail alike, so stop here."""
        if slot.proc is not None and slot.proc.is_alive():
            slot.proc.kill()
            slot.proc.join()
        self._release(slot)
        self.close()
        raise IsolationError(f"a decoding process could not start: {why.strip()}")

    def _forward_output(self, slot: _Slot) -> None:
        """Copy what the child wrote to stdout or stderr to this process's stderr."""
        if slot.out is None:
            return
        while True:
            try:
                data = os.read(slot.out.fileno(), 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer is gone: the child exited
                slot.out.close()
                slot.out = None
                return
            try:
                os.write(2, data)
            except OSError:
                pass
