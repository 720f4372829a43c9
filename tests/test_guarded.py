"""File sources read in a child process (hashsvc/sources/guarded.py): a reader that stalls,
crashes or runs out of memory costs the step it was on, recorded as a Problem; everything else
in the source comes through exactly once, and a legitimately long step is not cut short."""

from __future__ import annotations

import faulthandler
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hashsvc.errors import LimitExceeded, SourceError
from hashsvc.locators import Link
from hashsvc.sources import Entry, FileInfo, Limits, Problem, Source, open_source
from hashsvc.sources import guarded
from hashsvc.sources.directory import fs_locator
from hashsvc.sources.guarded import GuardedSource
from hashsvc.sources.steps import beat, checkpoint, done

from test_sources import jpeg, put, tar_bytes

FAST = Limits(reader_timeout_seconds=1.5)


def _entry(name: str, data: bytes = b"") -> Entry:
    return Entry(FileInfo(fs_locator("ev.bin").child(Link("t", name)), len(data)),
                 lambda: data)


def _fail_read() -> bytes:
    raise LimitExceeded("too big")


class Scripted(Source):
    """A reader following a script: ("item", name), ("step", marker, [inner script]),
    ("hang",), ("crash",), ("hog",), ("busy", seconds), ("toobig", name)."""

    def __init__(self, script: list[Any]) -> None:
        super().__init__("ev.bin", FAST)
        self.script = script

    def walk(self) -> Iterator[Any]:
        return self._run(self.script)

    def _run(self, script: list[Any]) -> Iterator[Any]:
        for action in script:
            kind = action[0]
            if kind == "item":
                yield _entry(action[1], action[1].encode())
            elif kind == "toobig":
                yield Entry(FileInfo(fs_locator(action[1]), 1), _fail_read)
            elif kind == "step":
                why = checkpoint(action[1])
                if why is not None:
                    yield Problem(fs_locator(action[1]), "read", f"skipped: {why}")
                    continue
                try:
                    yield from self._run(action[2])
                finally:
                    done()
            elif kind == "hang":
                time.sleep(3600)
            elif kind == "crash":
                faulthandler.disable()  # pytest's, inherited by the fork: no dump in the log
                os.kill(os.getpid(), signal.SIGSEGV)
            elif kind == "write":  # a reader that tries to write a file
                with open(action[1], "wb") as fh:
                    fh.write(b"evidence")
            elif kind == "hog":
                hoard = [bytearray(64 * 1024 * 1024) for _ in range(1000)]
                yield _entry(str(len(hoard)))
            elif kind == "busy":  # long, legitimate work that shows it is alive
                until = time.monotonic() + action[1]
                while time.monotonic() < until:
                    time.sleep(0.2)
                    beat()


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Run a script in a forked reading child (fork: the child inherits this patch)."""
    monkeypatch.setattr(guarded, "start_method", lambda: "fork")
    path = put(tmp_path / "ev.bin", b"x")

    def run(script: list[Any], limits: Limits = FAST) -> list[Any]:
        monkeypatch.setattr(guarded, "open_unguarded", lambda uri, lim: Scripted(script))
        source = GuardedSource(str(path), limits)
        try:
            return [(("entry", i.info.locator.links[-1].name, i.read()) if isinstance(i, Entry)
                     else ("problem", i.locator.path, i.message)) for i in source.walk()]
        finally:
            source.close()

    return run


def test_a_stall_in_a_named_step_costs_that_step_and_nothing_found_is_lost(scripted: Any
                                                                           ) -> None:
    started = time.monotonic()
    out = scripted([("item", "a"),
                    ("step", "file:1", [("item", "b1"), ("item", "b2"), ("hang",)]),
                    ("item", "c"),
                    ("step", "file:2", [("item", "d")])])
    assert out == [
        ("entry", "a", b"a"), ("entry", "b1", b"b1"), ("entry", "b2", b"b2"),
        ("problem", "file:1", "skipped: exceeded the reader's time limit (1.5 s)"),
        ("entry", "c", b"c"), ("entry", "d", b"d")]
    assert time.monotonic() - started < 30


def test_a_crash_in_a_named_step_costs_that_step(scripted: Any) -> None:
    out = scripted([("item", "a"), ("step", "list:7", [("crash",)]), ("item", "c")])
    assert out == [("entry", "a", b"a"),
                   ("problem", "list:7", "skipped: crashed the reader process (signal 11, "
                                         "SIGSEGV)"),
                   ("entry", "c", b"c")]


def test_nested_steps_mark_the_innermost_one(scripted: Any) -> None:
    out = scripted([("step", "outer", [("item", "a"), ("step", "inner", [("hang",)]),
                                       ("item", "b")]),
                    ("item", "c")])
    assert [o[1] for o in out] == ["a", "inner", "b", "c"]


def test_a_stall_outside_any_step_ends_the_walk_with_a_problem(scripted: Any) -> None:
    out = scripted([("item", "a"), ("step", "s", [("item", "b")]), ("hang",), ("item", "c")])
    assert out[:2] == [("entry", "a", b"a"), ("entry", "b", b"b")]
    assert out[2][0] == "problem" and out[2][1] == "ev.bin"
    assert out[2][2] == ("the reader exceeded the reader's time limit (1.5 s) after 2 items; "
                         "the rest of the source was not examined")
    assert len(out) == 3


def test_each_stalling_step_costs_only_itself(scripted: Any) -> None:
    script = [("item", "a")] + [("step", f"s{n}", [("hang",)]) for n in range(3)]
    out = scripted(script)
    assert [o[:2] for o in out] == [("entry", "a"), ("problem", "s0"), ("problem", "s1"),
                                    ("problem", "s2")]


def test_restarts_are_capped(scripted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guarded, "MAX_RESTARTS", 2)
    out = scripted([("step", f"s{n}", [("crash",)]) for n in range(5)])
    assert [o[1] for o in out[:2]] == ["s0", "s1"]
    assert out[2][1] == "ev.bin" and "restarted 2 times" in out[2][2]
    assert len(out) == 3


def test_long_work_that_beats_is_not_cut_short(scripted: Any) -> None:
    out = scripted([("item", "a"), ("busy", 4.0), ("item", "b")])
    assert out == [("entry", "a", b"a"), ("entry", "b", b"b")]


def test_the_memory_limit_ends_the_walk_with_a_problem(scripted: Any) -> None:
    out = scripted([("item", "a"), ("hog",), ("item", "b")],
                   Limits(reader_timeout_seconds=30, reader_memory_mb=256))
    assert out[0] == ("entry", "a", b"a")
    assert out[1] == ("problem", "ev.bin", "the reader exceeded its memory limit (256 MiB); "
                                           "the rest of the source was not examined")
    assert len(out) == 2


def test_read_errors_keep_their_kind(scripted: Any) -> None:
    with pytest.raises(LimitExceeded, match="too big"):
        scripted([("toobig", "big.bin")])


def test_a_source_that_cannot_be_opened_raises_in_the_scanning_process(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(uri: str, limits: Limits) -> Source:
        raise SourceError("disk image cannot be opened: no")

    monkeypatch.setattr(guarded, "start_method", lambda: "fork")
    monkeypatch.setattr(guarded, "open_unguarded", refuse)
    source = GuardedSource(str(put(tmp_path / "x.img", b"x")), FAST)
    with pytest.raises(SourceError, match="cannot be opened: no"):
        list(source.walk())


def test_a_file_source_is_guarded_and_reads_like_the_reader_itself(tmp_path: Path) -> None:
    members = [("a.jpg", jpeg(1)), ("b/c.jpg", jpeg(2))]
    archive = put(tmp_path / "photos.tar", tar_bytes(members))
    source = open_source(archive)
    assert isinstance(source, GuardedSource)
    items = list(source.walk())
    direct = list(guarded.open_unguarded(str(archive), Limits()).walk())
    assert [type(i) for i in items] == [type(i) for i in direct]
    got = [(i.info.locator, i.read()) for i in items if isinstance(i, Entry)]
    assert got == [(i.info.locator, data) for i, (_, data) in
                   zip([i for i in direct if isinstance(i, Entry)], members)]
    # A picture named as the source keeps its path: the decoding child reads it there.
    picture = put(tmp_path / "one.jpg", jpeg(3))
    (entry,) = open_source(picture).walk()
    assert isinstance(entry, Entry) and entry.fs_path == str(picture)
    assert entry.read() == jpeg(3)


def test_both_limits_off_reads_in_this_process(tmp_path: Path) -> None:
    archive = put(tmp_path / "photos.tar", tar_bytes([("a.jpg", jpeg(1))]))
    assert not isinstance(open_source(archive, Limits(reader_timeout_seconds=0,
                                                      reader_memory_mb=0)), GuardedSource)


def test_archive_reading_shows_the_reader_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every member byte an archive reader decompresses is charged to its budget, and each
    charge is a heartbeat: a large member read slowly is not taken for a stall."""
    from types import SimpleNamespace

    from hashsvc.sources import steps
    from hashsvc.sources.streams import Budget

    counter, buffer = SimpleNamespace(value=0), SimpleNamespace(value=b"")
    monkeypatch.setattr(steps, "_shared", (counter, buffer))
    budget = Budget(1 << 20)
    for _ in range(5):
        budget.charge(4096)
    assert counter.value == 5
    monkeypatch.setattr(steps, "_shared", None)  # outside a reading child: nothing counted
    budget.charge(4096)
    assert counter.value == 5


def _hostile_walk(fileobj: Any, locator: Any, limits: Limits, depth: int, budget: Any
                  ) -> Iterator[Any]:
    """An archive reader that hangs or crashes, as its archive's first bytes say."""
    if fileobj.read(16).startswith(b"HOSTILE-SEGV"):
        faulthandler.disable()
        os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(3600)
    yield from ()


def test_a_hostile_archive_in_a_folder_costs_only_itself(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A folder is read in a reading child too: an archive in it whose reader hangs or
    crashes is recorded as a Problem, and every other file of the folder is read once."""
    from hashsvc.sources import archives, directory

    hostile = archives.ContainerReader("hostile", lambda head: head.startswith(b"HOSTILE-"),
                                       _hostile_walk, needs_seek=False)
    real = directory.sniff_container
    monkeypatch.setattr(directory, "sniff_container",
                        lambda head: hostile if hostile.sniff(head) else real(head))
    monkeypatch.setattr(guarded, "start_method", lambda: "fork")  # the child keeps the patch
    root = tmp_path / "seized"
    put(root / "a.jpg", jpeg(1))
    put(root / "b-hangs.zip", b"HOSTILE-HANG" + b"\0" * 100)
    put(root / "c.jpg", jpeg(2))
    put(root / "d" / "crashes.zip", b"HOSTILE-SEGV" + b"\0" * 100)
    put(root / "d" / "e.jpg", jpeg(3))
    put(root / "f.tar", tar_bytes([("g.jpg", jpeg(4))]))
    source = open_source(root, FAST)
    assert isinstance(source, GuardedSource)
    try:
        items = list(source.walk())
    finally:
        source.close()
    entries = sorted((i.info.locator.path, i.read()) for i in items if isinstance(i, Entry))
    assert entries == [("a.jpg", jpeg(1)), ("c.jpg", jpeg(2)), ("d/e.jpg", jpeg(3)),
                       ("f.tar/g.jpg", jpeg(4))]
    problems = sorted((i.locator.path, i.stage, i.message) for i in items
                      if isinstance(i, Problem) and not i.skipped)
    assert problems == [
        ("b-hangs.zip", "archive", "the reader exceeded the reader's time limit (1.5 s) "
                                   "reading this hostile; it was not scanned in full"),
        ("d/crashes.zip", "archive", "the reader crashed the reader process (signal 11, "
                                     "SIGSEGV) reading this hostile; it was not scanned in "
                                     "full")]


def test_a_reader_cannot_write_a_file(scripted: Any, tmp_path: Path) -> None:
    target = tmp_path / "extracted.jpg"
    out = scripted([("item", "a"), ("write", str(target)), ("item", "b")])
    assert out[0] == ("entry", "a", b"a")
    assert out[1][:2] == ("problem", "ev.bin")
    assert "the reader failed: OSError: [Errno 27] File too large" in out[1][2]
    assert len(out) == 2 and (not target.exists() or target.stat().st_size == 0)
