"""`gumtool import` task planning: the chunks of every source, in order, from where the
checkpoint says each file was left (see import_sources for the chunking rule and
import_checkpoint for what is recorded).

Imports gumtool's import sources/checkpoint/worker/mapping modules. Batch ids are
`gi:<file id>:<content offset>` (the file id: a digest of its real path and its first 64 KiB),
or `gi:stdin:<crc32 of the chunk>:<offset>` for stdin, which has no checkpoint: re-running the
same input through stdin is recognised by the destination's batch ids alone (within its
`batch_id_window`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import IO

from .import_checkpoint import Checkpoint, Entry
from .import_mapping import ImportFailed
from .import_sources import (
    EDGE,
    Cursor,
    Source,
    Stream,
    content_crc,
    file_boundaries,
    file_id,
    parse_header,
)
from .import_worker import Task, crc_text


def _pread(path: str | os.PathLike[str], start: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(n)


class Planner:
    """Yields the tasks of every source; notes what was skipped and why."""

    def __init__(self, sources: list[Source], checkpoint: Checkpoint, chunk_size: int,
                 options: str, stdin: IO[bytes] | None = None,
                 check_header: Callable[[Source], None] = lambda s: None) -> None:
        self.sources = sources
        self.check_header = check_header
        self.checkpoint = checkpoint
        self.chunk_size = chunk_size
        self.options = options
        self.stdin = stdin
        self.notes: list[str] = []
        self.skipped_files = 0
        self.resumed_bytes: dict[int, int] = {}  # source -> raw bytes already imported
        self.fids: dict[int, str] = {}
        self.heads: dict[int, bytes] = {}  # the first EDGE bytes of the sources in flight
        self.seq = 0
        self._chunk_of: dict[int, int] = {}  # source -> the chunk size its tasks use

    # -- resuming --------------------------------------------------------------------------
    def _resume(self, si: int, src: Source, head: bytes) -> tuple[int, int, int] | None:
        """(start offset, lines before it, chunk size) for a file, or None to skip it."""
        entry = self.checkpoint.get(src.key)
        self.fids[si] = file_id(src, head)
        self.heads[si] = head[:EDGE]
        base = src.header_bytes
        fresh = (base, 1 if src.format == "csv" else 0, self.chunk_size)
        if entry is None:
            return fresh
        n = int(entry.head.split(":")[1])
        if content_crc(head[:n]) != entry.head:
            raise ImportFailed(f"{src.name}: its first bytes differ from when it was imported "
                               f"(its first {entry.offset} bytes were); it is another file now. "
                               "Move it "
                               f"aside, or delete {self.checkpoint.path} to import every file "
                               "from the start (files imported before would count twice)")
        if entry.complete and entry.size == src.size:
            self.skipped_files += 1
            self.notes.append(f"{src.name}: already imported (skipped)")
            return None
        if not entry.complete and entry.options != self.options:
            raise ImportFailed(f"{src.name}: an interrupted import of it used other options "
                               "(mapping, preset, rules or schema); re-run it with the same "
                               "arguments to finish it")
        self.fids[si] = entry.fid
        verb = "appended to since its import" if entry.complete else "resumed"
        self.notes.append(f"{src.name}: {verb}: from line {entry.line + 1}")
        return entry.offset, entry.line, entry.chunk

    def _check_edge(self, src: Source, entry: Entry | None, before: bytes) -> None:
        if entry is not None and entry.edge and content_crc(before) != entry.edge:
            raise ImportFailed(f"{src.name}: the content before line {entry.line + 1} (where "
                               "its import stopped) changed since; refusing to resume it")

    def record(self, task: Task, lines: int) -> None:
        """The checkpoint entry after `task` (applied and durable)."""
        src = self.sources[task.source]
        if src.path is None:
            return
        self.checkpoint.put(src.key, Entry(
            fid=self.fids[task.source],
            head=content_crc(self.heads[task.source][:min(EDGE, task.end)]), offset=task.end,
            line=task.line + lines, edge=task.edge,
            chunk=self._chunk_of.get(task.source, self.chunk_size), options=self.options, size=src.size or 0, complete=task.last))

    # -- the tasks -------------------------------------------------------------------------
    def tasks(self) -> Iterator[Task]:
        for si, src in enumerate(self.sources):
            yield from self._with_last(self._source_tasks(si, src))

    def alias_tasks(self) -> Iterator[Task]:
        """Every chunk of every source from its start (pass 1: no checkpoint)."""
        for si, src in enumerate(self.sources):
            if src.path is None:
                raise ImportFailed("`-` (stdin) cannot be read twice, and alias records need "
                                   "a first pass over the input; write it to a file")
            yield from self._source_tasks(si, src, resume=False)

    def _with_last(self, tasks: Iterator[Task]) -> Iterator[Task]:
        prev = None
        for t in tasks:
            if prev is not None:
                yield prev
            prev = t
        if prev is not None:
            prev.last = True
            yield prev

    def _task(self, si: int, src: Source, start: int, end: int, line: int, **kw: object
              ) -> Task:
        t = Task(self.seq, si, src.format, src.header, start, end, line=line,
                 **kw)  # type: ignore[arg-type]
        self.seq += 1
        return t

    def _source_tasks(self, si: int, src: Source, resume: bool = True) -> Iterator[Task]:
        if src.path is None:
            yield from self._stdin_tasks(si, src)
            return
        if src.compression is None:
            assert src.size is not None
            head = _pread(src.path, 0, EDGE)
            if src.format == "csv":
                first = head.split(b"\n", 1)[0]
                parse_header(first + b"\n" if len(first) < len(head) else _first_line(src), src)
                self.check_header(src)
            plan = self._resume(si, src, head) if resume else (
                src.header_bytes, 1 if src.format == "csv" else 0, self.chunk_size)
            if plan is None:
                return
            start, line, chunk = plan
            self._chunk_of[si] = chunk
            if resume:
                entry = self.checkpoint.get(src.key)
                if entry is not None:
                    n = int(entry.edge.split(":")[1]) if entry.edge else 0
                    self._check_edge(src, entry, _pread(src.path, start - n, n))
                self.resumed_bytes[si] = start
            if start >= src.size:
                entry = self.checkpoint.get(src.key)
                yield self._task(si, src, start, start, line, data=b"", raw_done=src.size,
                                 edge=entry.edge if entry is not None else "",
                                 batch_id=f"gi:{self.fids.get(si, '')}:{start}")
                return
            for s, e in file_boundaries(src.path, start, src.size, chunk):
                n = min(EDGE, e)
                yield self._task(si, src, s, e, line, path=str(src.path), raw_done=e,
                                 edge=crc_text(_pread(src.path, e - n, n)),
                                 batch_id=f"gi:{self.fids.get(si, '')}:{s}")
                line = -1  # filled in by the main process from the previous result
            return
        stream = Stream(src)
        try:
            cursor = Cursor(stream)
            head = cursor.peek(EDGE)
            if src.format == "csv":
                parse_header(cursor.line(), src)
                self.check_header(src)
            plan = self._resume(si, src, head) if resume else (
                src.header_bytes, 1 if src.format == "csv" else 0, self.chunk_size)
            if plan is None:
                return
            start, line, chunk = plan
            self._chunk_of[si] = chunk
            entry = self.checkpoint.get(src.key) if resume else None
            n = int(entry.edge.split(":")[1]) if entry is not None and entry.edge else 0
            before = cursor.skip_to(start, n)
            if resume:
                self._check_edge(src, entry, before)
                self.resumed_bytes[si] = stream.raw_position()
            emitted = False
            for s, data in cursor.chunks(chunk):
                emitted = True
                yield self._task(si, src, s, s + len(data), line, data=data,
                                 raw_done=stream.raw_position(),
                                 edge=crc_text(data[-EDGE:]),
                                 batch_id=f"gi:{self.fids.get(si, '')}:{s}")
                line = -1
            if not emitted:
                yield self._task(si, src, start, start, line, data=b"",
                                 raw_done=stream.raw_position(),
                                 edge=entry.edge if entry is not None else "",
                                 batch_id=f"gi:{self.fids.get(si, '')}:{start}")
        finally:
            stream.close()

    def _stdin_tasks(self, si: int, src: Source) -> Iterator[Task]:
        stream = Stream(src, self.stdin)
        cursor = Cursor(stream)
        line = 0
        if src.format == "csv":
            parse_header(cursor.line(), src)
            self.check_header(src)
            cursor.skip_to(src.header_bytes)
            line = 1
        for s, data in cursor.chunks(self.chunk_size):
            yield self._task(si, src, s, s + len(data), line, data=data,
                             raw_done=stream.raw_position(),
                             batch_id=f"gi:stdin:{crc_text(data)}:{s}")
            line = -1


def _first_line(src: Source) -> bytes:
    assert src.path is not None
    with open(src.path, "rb") as f:
        return f.readline()


def stdin_buffer() -> IO[bytes]:
    return sys.stdin.buffer
