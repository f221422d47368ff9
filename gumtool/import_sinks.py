"""Where `gumtool import` puts rows: a stopped database directory (through the storage layer's
public API), or a running server or router (through `PUT /insert`).

Imports gumshoe db, config and batch, and gumtool.import_mapping/import_rows/import_checkpoint;
the HTTP client is the stdlib's (`http.client`: gumtool never imports the web stack).

* `DBSink` opens the database with `gumshoe.db.DB` (which takes the directory lock, so a
  running server is refused) with durability "none": the input files are the log, so the
  write-ahead log is not written. Each chunk's rolled-up batch is applied with
  `DB.insert_batch(batch, batch_id=...)`; `durable()` flushes (segments, dictionaries and
  db.json with the applied batch ids), and with `durability = "fsync"` in the config also
  fsyncs what the flush wrote, before the caller moves the checkpoint.
* `HTTPSink` sends each chunk's rows as one JSON insert with `X-Batch-Id` (and
  `Authorization: Bearer` with `--key`); a 200 means the server made them durable. Connection
  failures, 502/503/504 and timeouts are retried with the same batch id (bounded), so a retry
  never counts a row twice; any other 4xx/5xx stops the import with the server's message.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe.config import ArchiveConfig, Config
from gumshoe.db import DB
from gumshoe.errors import InsertError
from gumshoe.schema import Schema

from .import_checkpoint import fsync_tree
from .import_mapping import ImportFailed
from .import_rows import Rolled

RETRIES = 8  # attempts per batch for transient failures (about a minute with backoff)


class DBSink:
    """A stopped database directory, written through gumshoe.db.DB."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.fsync = config.durability == "fsync"
        self.db: DB | None = None
        self.schema = Schema.from_config(config.schema)

    @property
    def directory(self) -> Path:
        return Path(self.config.database_dir)

    def open(self) -> None:
        # No raw archive: the input files are the raw data (and without a log it could not
        # be exactly-once across a crash).
        self.db = DB(self.config.replace(durability="none", archive=ArchiveConfig()))

    def apply(self, payload: Rolled | None, batch_id: str, where: str, rows: int
              ) -> dict[str, int]:
        """Apply one chunk's rolled-up rows; input rows by outcome."""
        assert self.db is not None
        out = {"imported": 0, "outside retention": 0, "already imported": 0}
        if payload is None or payload.n == 0:
            return out
        batch = payload.to_batch(self.schema)
        cutoff = self.db.retention_cutoff()
        if cutoff is not None:
            inside = self.schema.interval_start(batch.timestamps) >= cutoff
            if not inside.all():
                out["outside retention"] = int(batch.counts[~inside].sum())  # type: ignore[index]
                batch = batch.take(inside)
                batch.row_index = None
        if batch.n == 0:
            return out
        try:
            result = self.db.insert_batch(batch, batch_id=batch_id)
        except InsertError as e:
            raise ImportFailed(f"{where}: {_without_row(str(e))}; nothing of these lines was "
                               "imported") from None
        applied = int(np.asarray(batch.counts).sum())
        if result.duplicate:
            out["already imported"] = applied
        else:
            out["imported"] = applied
            if result.rejected:  # retention moved on meanwhile: count it, do not guess rows
                out["outside retention"] += result.rejected
        return out

    def durable(self) -> None:
        if self.db is None:  # never opened: nothing was applied
            return
        self.db.flush()
        if self.db.failed:  # the flush did not happen: the checkpoint must not move
            raise ImportFailed(f"the database cannot be written: {self.db.failed}")
        if self.fsync:
            fsync_tree(self.directory)

    def close(self) -> None:
        if self.db is not None:
            self.db.close(flush=False)
            self.db = None


def _without_row(message: str) -> str:
    """InsertError messages name a row of the rolled-up batch; the caller names the lines."""
    if message.startswith("rows[") and "]." in message:
        return message[message.index("].") + 2:]
    return message


class HTTPSink:
    """A running gumshoe server or router, through PUT /insert."""

    def __init__(self, url: str, key: str | None, timeout: float = 120.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImportFailed(f"--url {url!r}: expected http://HOST:PORT")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = parts.path.rstrip("/") + "/insert"
        self.key = key
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.url = url

    def open(self) -> None:
        pass

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            cls = (http.client.HTTPSConnection if self.scheme == "https"
                   else http.client.HTTPConnection)
            self.conn = cls(self.host, self.port, timeout=self.timeout)
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def apply(self, payload: bytes | None, batch_id: str, where: str, rows: int
              ) -> dict[str, int]:
        out = {"imported": 0, "outside retention": 0, "already imported": 0}
        if not payload:
            return out
        headers = {"Content-Type": "application/json", "X-Batch-Id": batch_id}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        delay = 0.25
        last = ""
        for attempt in range(RETRIES):
            try:
                conn = self._connection()
                conn.request("PUT", self.path, body=payload, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status == 200:
                    reply = json.loads(body)
                    if reply.get("duplicate"):
                        out["already imported"] = rows
                    else:
                        out["imported"] = int(reply.get("inserted", 0))
                        out["outside retention"] = int(reply.get("rejected", 0))
                    return out
                message = _error_of(body) or f"HTTP {resp.status}"
                if resp.status not in (502, 503, 504):
                    hint = "; use a smaller --chunk-size" if resp.status == 413 else ""
                    raise ImportFailed(f"{where}: {self.url} refused the batch ({resp.status}): "
                                       f"{message}; nothing of these lines was imported{hint}")
                last = f"HTTP {resp.status}: {message}"
            if attempt + 1 < RETRIES:
                time.sleep(delay)
                delay = min(delay * 2, 15.0)
        raise ImportFailed(f"{where}: {self.url} did not take the batch after {RETRIES} tries "
                           f"({last}); re-run with the same arguments to resume")

    def durable(self) -> None:
        pass  # a 200 means the server made the batch durable

    def close(self) -> None:
        self._drop()


def _error_of(body: bytes) -> str:
    try:
        obj: Any = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    return str(obj.get("error", obj)) if isinstance(obj, dict) else str(obj)
