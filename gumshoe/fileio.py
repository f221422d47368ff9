"""The file I/O seam: every durability-relevant write, fsync and rename goes through here.

No internal imports. The write-ahead log, segment writing and the flush's metadata replace call
`write`, `fsync` and `replace` below, which delegate to the module-level `_io` object. Tests swap
it (`with inject(FaultyIO(...)):`) to make the Nth call fail with EIO or ENOSPC and check that
nothing is acknowledged after a failure.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator


class FileIO:
    """The real thing: thin wrappers around the os calls."""

    def write(self, target: Any, data: Any) -> None:
        """Write all of `data` to `target`: a raw file descriptor (int) or a binary file."""
        if isinstance(target, int):
            view = memoryview(data).cast("B")
            while view:
                n = os.write(target, view)
                view = view[n:]
        else:
            target.write(data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        os.replace(src, dst)


class FaultyIO(FileIO):
    """Fails the `fail_at`-th call (1-based, counting the kinds in `kinds`) with `err`.

    A failing write first writes half of its data, like a disk that fills up mid-record.
    `calls` counts every call seen, so a clean run tells how many N there are to try.
    With `sticky`, every later call fails too (a disk that stays broken).
    """

    def __init__(self, fail_at: int = 0, err: int = errno.EIO,
                 kinds: tuple[str, ...] = ("write", "fsync", "replace"),
                 sticky: bool = False) -> None:
        self.fail_at = fail_at
        self.err = err
        self.kinds = kinds
        self.sticky = sticky
        self.calls = 0
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def _should_fail(self, kind: str) -> bool:
        if kind not in self.kinds:
            return False
        with self._lock:
            self.calls += 1
            fail = bool(self.fail_at) and (self.calls == self.fail_at or
                                           (self.sticky and self.calls > self.fail_at))
            if fail:
                self.failed.append(kind)
            return fail

    def _raise(self, kind: str) -> None:
        raise OSError(self.err, f"injected {os.strerror(self.err)} on {kind}")

    def write(self, target: Any, data: Any) -> None:
        if self._should_fail("write"):
            view = memoryview(data).cast("B")
            super().write(target, view[:len(view) // 2])
            if not isinstance(target, int):
                target.flush()
            self._raise("write")
        super().write(target, data)

    def fsync(self, fd: int) -> None:
        if self._should_fail("fsync"):
            self._raise("fsync")
        super().fsync(fd)

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if self._should_fail("replace"):
            self._raise("replace")
        super().replace(src, dst)


_io: FileIO = FileIO()


def write(target: Any, data: Any) -> None:
    _io.write(target, data)


def fsync(fd: int) -> None:
    _io.fsync(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    _io.replace(src, dst)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inject(io: FileIO) -> Iterator[FileIO]:
    """Use `io` for every file operation inside the block (tests only)."""
    global _io
    old, _io = _io, io
    try:
        yield io
    finally:
        _io = old
