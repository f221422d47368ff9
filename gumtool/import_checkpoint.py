"""`gumtool import` checkpoints: how far each input file has been imported, durably.

Imports gumtool.import_mapping (its error type) and gumshoe.fileio. One JSON file per
destination (`import.checkpoint.json` in the database directory, or beside the working
directory for `--url`), replaced atomically. It is written only once what it records is
durable (after a database flush, or after the server acknowledged the batches), so after a
crash it never claims more than the destination holds; the batches between the checkpoint and
the crash are recognised by their batch ids (file identity and chunk offset) and skipped.

Per file (by real path): the identity of its head (crc32 and length of the first 64 KiB of
content), the content offset and line count imported so far, the crc32 of the 64 KiB before
that offset (so a file changed before the resume point is refused, not half re-imported), the
chunk size (so the chunks after the resume point are the same as before), a digest of the
options (mapping, rules, schema), the raw size, and whether the whole file is imported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from gumshoe import fileio
from gumshoe.layout import IMPORT_CHECKPOINT

from .import_mapping import ImportFailed

FORMAT = "gumtool-import/1"
NAME = IMPORT_CHECKPOINT


@dataclasses.dataclass
class Entry:
    fid: str
    head: str  # "crc:len" of the first EDGE bytes of content
    offset: int  # content bytes imported (durably)
    line: int  # lines before `offset`
    edge: str  # "crc:len" of the content just before `offset` ("" at the start)
    chunk: int  # chunk size of the run that began this file
    options: str
    size: int  # raw bytes when last recorded
    complete: bool = False


class Checkpoint:
    """The checkpoint file (or none: `path is None` keeps it in memory only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, Entry] = {}
        self.dirty = False
        if path is not None and path.exists():
            try:
                obj = json.loads(path.read_bytes())
                if obj.get("format") != FORMAT:
                    raise ValueError(f"format {obj.get('format')!r}")
                self.entries = {k: Entry(**v) for k, v in obj["files"].items()}
            except (ValueError, TypeError, KeyError) as e:
                raise ImportFailed(f"{path}: unreadable import checkpoint ({e}); delete it to "
                                   "start over (files imported before would be imported "
                                   "again)") from None

    def get(self, key: str) -> Entry | None:
        return self.entries.get(key)

    def put(self, key: str, entry: Entry) -> None:
        self.entries[key] = entry
        self.dirty = True

    def save(self, fsync: bool = False) -> None:
        if self.path is None or not self.dirty:
            return
        data = json.dumps({"format": FORMAT, "files": {
            k: dataclasses.asdict(v) for k, v in sorted(self.entries.items())}}, indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            fileio.write(f, data.encode())
            f.flush()
            if fsync:
                fileio.fsync(f.fileno())
        fileio.replace(tmp, self.path)
        if fsync:
            fileio.fsync_dir(self.path.parent)
        self.dirty = False


def fsync_tree(directory: Path) -> None:
    """fsync every regular file of a directory, then the directory: what a flush with
    durability "none" wrote reaches the disk before the checkpoint says it is imported."""
    for p in directory.iterdir():
        if p.is_file() and not p.name.endswith(".tmp"):
            fd = os.open(p, os.O_RDONLY)
            try:
                fileio.fsync(fd)
            finally:
                os.close(fd)
    fileio.fsync_dir(directory)
