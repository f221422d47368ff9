"""The file I/O seam: every durability-relevant write, fsync and rename, and every open of a
database file, goes through here.

No internal imports. The write-ahead log, segment writing and the flush's metadata replace call
`write`, `fsync` and `replace` below, and every open of a segment, dictionary, log or metadata
file (and the memory map of a segment, which takes a descriptor of its own) goes through
`open_file`, `open_fd`, `map_file` or `read_bytes`; all delegate to the module-level `_io`
object. Tests swap it (`with inject(FaultyIO(...)):`) to make the Nth call fail with EIO or
ENOSPC (a disk fault: fail-stop) or EMFILE (out of descriptors: `is_transient`, retried) and
check that nothing is acknowledged after a failure and nothing acknowledged is lost.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

# Errors that say "no file descriptor now", not "the disk is broken": the operation is retried
# later instead of turning the database read-only.
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


def is_transient(e: BaseException) -> bool:
    """True for an OSError that a retry can cure (out of file descriptors: EMFILE/ENFILE)."""
    return isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS


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

    def open_file(self, path: str | os.PathLike[str], mode: str) -> IO[Any]:
        return open(path, mode)

    def open_fd(self, path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
        return os.open(path, flags, mode)

    def map_file(self, fd: int) -> mmap.mmap:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)  # keeps a dup of fd while mapped


class FaultyIO(FileIO):
    """Fails the `fail_at`-th call (1-based, counting the kinds in `kinds`) with `err`.

    Kinds: "write", "fsync", "replace" (the default), and "open" (every `open_file`, `open_fd`,
    `map_file` and `read_bytes`: each takes a file descriptor, so EMFILE strikes there).
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

    def open_file(self, path: str | os.PathLike[str], mode: str) -> IO[Any]:
        if self._should_fail("open"):
            self._raise(f"open of {os.fspath(path)}")
        return super().open_file(path, mode)

    def open_fd(self, path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
        if self._should_fail("open"):
            self._raise(f"open of {os.fspath(path)}")
        return super().open_fd(path, flags, mode)

    def map_file(self, fd: int) -> mmap.mmap:
        if self._should_fail("open"):
            self._raise("mmap")
        return super().map_file(fd)


_io: FileIO = FileIO()


def write(target: Any, data: Any) -> None:
    _io.write(target, data)


def fsync(fd: int) -> None:
    _io.fsync(fd)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    _io.replace(src, dst)


def open_file(path: str | os.PathLike[str], mode: str = "rb") -> IO[Any]:
    """`open(path, mode)` (binary modes), through the seam."""
    return _io.open_file(path, mode)


def open_fd(path: str | os.PathLike[str], flags: int, mode: int = 0o666) -> int:
    """`os.open(path, flags, mode)`, through the seam."""
    return _io.open_fd(path, flags, mode)


def map_file(fd: int) -> mmap.mmap:
    """A read-only memory map of the whole file `fd` (which may be closed afterwards)."""
    return _io.map_file(fd)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole contents of a file."""
    with open_file(path, "rb") as f:
        data: bytes = f.read()
    return data


def open_dir(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor of a directory (to fsync it or to flock it)."""
    return open_fd(path, os.O_RDONLY | os.O_DIRECTORY)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = open_dir(path)
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
