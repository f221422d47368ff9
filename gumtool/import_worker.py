"""`gumtool import` workers: the processes that turn chunks into batches, and the ordered
pipeline that feeds them.

Imports gumtool's import decode/rows/rules/mapping/sources modules. Workers are forked before
the database is opened (so none holds its directory lock) with the plan and the rules as
initializer arguments; each asks the kernel to kill it when the main process dies
(PR_SET_PDEATHSIG), so a kill -9 of an import leaves no worker behind. Results come back in
task order, with at most `window` tasks in flight (back-pressure on the reading side).
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import gc
import multiprocessing
import os
import pickle
import signal
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import msgspec
import pyarrow as pa

from .import_decode import _STRINGLIKE, CsvDecoder, JsonDecoder
from .import_mapping import Plan
from .import_rows import REASONS, Rolled, json_body, prepare, roll_up
from .import_rules import Rules
from .import_sources import read_plain


@dataclasses.dataclass
class Task:
    """One chunk of one source."""

    seq: int
    source: int  # index into the sources
    format: str
    header: list[str] | None
    start: int  # content offset
    end: int
    path: str | None = None  # a plain file the worker reads [start, end) of
    data: bytes | None = None  # or the chunk itself
    line: int = 0  # lines before `start` (line numbers are line + index + 1)
    raw_done: int = 0  # raw bytes of the source consumed once this chunk is read
    edge: str = ""  # crc32:len of the content just before `end`
    last: bool = False  # the source's final chunk
    batch_id: str = ""
    slot: int | None = None  # or the chunk is in this shared memory slot (`length` bytes)
    length: int = 0


@dataclasses.dataclass
class Result:
    n_lines: int
    records: int  # non-blank lines
    imported: int
    counts: dict[str, int]
    bad: list[tuple[int, str]]  # (line index in the chunk, message), the first few
    payload: Rolled | bytes | None = None


_STATE: dict[str, Any] = {}
# Shared memory slots (memfd), created before the workers are forked so they inherit them: a
# streamed chunk is written once by the main process and read once by a worker, and the
# worker's result comes back the same way (512 MB through the pool's pipes with pickling cost
# 1.2 CPU seconds here, through memfd slots 0.3). They vanish with the processes, also after
# a kill -9.
_SLOTS: list[int] = []


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    Every chunk allocates and frees the same few large buffers (the chunk, its columns, the
    roll-up's arrays). By default glibc serves those from fresh mmaps, or trims them off the
    heap when freed, so each chunk faults its pages in again: on the gzipped-JSON benchmark
    451k page faults and 1.6 CPU seconds in the kernel with two workers, against 101k and 0.7
    with this. Called before the workers are forked (they inherit it). Not glibc: no-op."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: the largest allowed (a chunk fits below it)
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def init(plan: Plan, rules: Rules | None, output: str, parent: int | None = None) -> None:
    """Set up a worker (or the main process, for --parallelism 1)."""
    if parent is not None:
        _die_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _STATE.clear()
    _STATE.update(plan=plan, rules=rules, output=output, decoders={})


def _decoder(task: Task) -> JsonDecoder | CsvDecoder:
    key = (task.format, tuple(task.header or ()))
    dec = _STATE["decoders"].get(key)
    if dec is None:
        plan = _STATE["plan"]
        dec = JsonDecoder(plan) if task.format == "jsonl" else CsvDecoder(plan, task.header or [])
        _STATE["decoders"][key] = dec
    return dec


def _chunk(task: Task) -> bytes:
    if task.data is not None:
        return task.data
    if task.slot is not None and task.length:
        return _read_slot(task.slot, task.length)
    assert task.path is not None
    from pathlib import Path

    return read_plain(Path(task.path), task.start, task.end)


def parse(task: Task) -> Result:
    """A chunk -> its rows (rolled up, or a JSON body), skipped rows by reason, bad lines."""
    plan: Plan = _STATE["plan"]
    rules: Rules = _STATE["rules"]
    decoded = _decoder(task).decode(_chunk(task))
    rows, counts, bad_rows, _ = prepare(decoded, plan, rules)
    bad = sorted(decoded.bad + bad_rows)
    payload: Rolled | bytes | None = None
    if rows.n:
        payload = (roll_up(rows, plan.schema) if _STATE["output"] == "db"
                   else json_body(rows, plan.schema))
    return Result(decoded.n_lines, decoded.n + decoded.bad_count, rows.n, counts, bad,
                  payload)


# -- pass 1: alias records -------------------------------------------------------------------
def _text(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return msgspec.json.encode(v).decode()


def aliases(task: Task) -> tuple[list[str], list[str]]:
    """The (identity, alias) pairs of a chunk's alias records."""
    plan: Plan = _STATE["plan"]
    assert plan.identity is not None and plan.alias is not None
    chunk = _chunk(task)
    if task.format == "csv":
        header = task.header or []
        if plan.alias not in header or plan.identity not in header:
            return [], []
        csv = CsvDecoder(plan, header, {plan.identity: "string", plan.alias: "string"})
        decoded = csv.decode(chunk)
        ident = decoded.values[plan.identity].cast(pa.string())
        alias = decoded.values[plan.alias].cast(pa.string())
        both = pa.compute.and_(ident.is_valid(), alias.is_valid())
        return ident.filter(both).to_pylist(), alias.filter(both).to_pylist()
    key = f'"{plan.alias}"'.encode()
    lines = []
    pos = chunk.find(key)
    while pos >= 0:  # one step per line that mentions the field (alias records), not per line
        start = chunk.rfind(b"\n", 0, pos) + 1
        end = chunk.find(b"\n", pos)
        end = len(chunk) if end < 0 else end
        lines.append(chunk[start:end])
        pos = chunk.find(key, end)
    if not lines:
        return [], []
    struct = msgspec.defstruct("AliasRecord", [("a", _STRINGLIKE, None),
                                               ("b", _STRINGLIKE, None)],
                               rename={"a": plan.identity, "b": plan.alias})
    dec = msgspec.json.Decoder(struct)
    try:
        recs = dec.decode_lines(b"\n".join(lines))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        recs = []
        for line in lines:  # a bad line among them: it is reported by the import pass
            try:
                recs.append(dec.decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                pass
    pairs = [(_text(r.a), _text(r.b)) for r in recs  # type: ignore[attr-defined]
             if r.a is not None and r.b is not None]  # type: ignore[attr-defined]
    return [a for a, _ in pairs], [b for _, b in pairs]  # type: ignore[misc]


def noop() -> int:
    return os.getpid()


# -- the pool --------------------------------------------------------------------------------
class Pipeline:
    """Run a task function over tasks in worker processes (or inline for parallelism 1),
    yielding (task, result) in task order."""

    def __init__(self, parallelism: int, plan: Plan, rules: Rules | None, output: str) -> None:
        self.parallelism = parallelism
        self.window = 2 * parallelism + 1
        self.pool: ProcessPoolExecutor | None = None
        gc.freeze()  # the modules' objects: never collected, so no collection walks them
        if parallelism > 1:
            if hasattr(os, "memfd_create") and not _SLOTS:
                _SLOTS.extend(os.memfd_create(f"gumtool-import-{i}", os.MFD_CLOEXEC)
                              for i in range(self.window))
            self.pool = ProcessPoolExecutor(
                parallelism, mp_context=multiprocessing.get_context("fork"),
                initializer=init, initargs=(plan, rules, output, os.getpid()))
            for f in [self.pool.submit(noop) for _ in range(parallelism)]:
                f.result()  # every worker forked now, before the database is opened
        else:
            init(plan, rules, output)

    def run(self, fn: Callable[[Task], Any], tasks: Iterable[Task],
            trivial: Callable[[Task], Any] = lambda t: None) -> Iterator[tuple[Task, Any]]:
        """`trivial(task)` may answer a task without a worker (not None)."""
        if self.pool is None:
            for t in tasks:
                r = trivial(t)
                yield t, (fn(t) if r is None else r)
            return
        pending: collections.deque[tuple[Task, Any, int | None]] = collections.deque()
        free = list(range(len(_SLOTS)))
        it = iter(tasks)
        done = False
        while True:
            while not done and len(pending) < self.window:
                nxt = next(it, None)
                if nxt is None:
                    done = True
                    break
                r = trivial(nxt)
                slot = None
                if r is None:
                    sent = nxt
                    if free:  # the chunk (when streamed) and the result travel in a slot
                        slot = free.pop()
                        length = 0
                        if nxt.data:
                            _write_slot(slot, nxt.data)
                            length = len(nxt.data)
                            nxt.data = None  # the main process keeps no second copy
                        sent = dataclasses.replace(nxt, data=None if length else nxt.data,
                                                   slot=slot, length=length)
                    r = self.pool.submit(_run_in_slot, fn, sent)
                pending.append((nxt, r, slot))
            if not pending:
                return
            t, fut, slot = pending.popleft()
            result = fut.result() if isinstance(fut, Future) else fut
            if isinstance(result, _InSlot):
                result = pickle.loads(_read_slot(result.slot, result.length))
            if slot is not None:
                free.append(slot)
            yield t, result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        while _SLOTS:
            os.close(_SLOTS.pop())


@dataclasses.dataclass(frozen=True)
class _InSlot:
    """A worker's result, pickled into the task's slot."""

    slot: int
    length: int


def _run_in_slot(fn: Callable[[Task], Any], task: Task) -> Any:
    result = fn(task)
    if task.slot is None:
        return result
    data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    _write_slot(task.slot, data)
    return _InSlot(task.slot, len(data))


def _read_slot(slot: int, length: int) -> bytes:
    parts = []
    got = 0
    while got < length:
        part = os.pread(_SLOTS[slot], length - got, got)
        if not part:
            raise AssertionError("shared memory slot shorter than its contents")
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _write_slot(slot: int, data: bytes) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(_SLOTS[slot], view[done:], done)


def empty_result() -> Result:
    return Result(0, 0, 0, dict.fromkeys(REASONS, 0), [])


def crc_text(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}:{len(data)}"


