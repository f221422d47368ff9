"""A child process for test_transient.py: runs a database out of file descriptors for real.

`python -m tests.storage.fd_child DIR` opens a database in DIR (fsync durability), inserts,
lowers RLIMIT_NOFILE and takes every free descriptor, then: inserts (no new descriptor
needed: acknowledged), flushes (fails with TransientStorageError, the DB stays writable), and
frees one descriptor at a time, retrying the flush after each, so the flush runs out at each of
its opens in turn until it succeeds. Then it inserts again, closes, reopens and checks that every
acknowledged batch is there exactly once. It prints one JSON object: the outcome.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import sys

from gumshoe.db import DB
from gumshoe.errors import TransientStorageError
from tests.crash.helpers import batch_rows, make_config, problems, totals

LIMIT = 256  # soft RLIMIT_NOFILE while descriptors run out
MAX_RETRIES = 200


def hog() -> list[int]:
    """Take every free file descriptor."""
    fds = []
    while len(fds) < LIMIT:
        try:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as e:
            if e.errno != errno.EMFILE:
                raise
            return fds
    raise AssertionError("the descriptor limit was not reached")


def main(directory: str) -> int:
    out: dict[str, object] = {"failed_flushes": 0, "failed_inserts": 0}
    cfg = make_config(directory, "fsync")
    acked: set[int] = set()
    attempted: set[int] = set()

    def insert(b: int) -> None:
        attempted.add(b)
        try:
            db.insert(batch_rows(b), f"b{b}")
        except TransientStorageError:
            out["failed_inserts"] = int(out["failed_inserts"]) + 1  # type: ignore[call-overload]
            return
        acked.add(b)

    db = DB(cfg)
    for b in range(5):
        insert(b)
    db.flush()
    for b in range(5, 9):  # new strings: the flush writes a new dictionary generation too
        insert(b)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(LIMIT, soft), hard))
    fds = hog()
    out["hogged"] = len(fds)
    insert(9)  # the active log file is open already: no new descriptor needed
    out["insert_while_exhausted"] = 9 in acked
    errors = []
    for _ in range(MAX_RETRIES):
        try:
            db.flush()
            break
        except TransientStorageError as e:
            out["failed_flushes"] = int(out["failed_flushes"]) + 1  # type: ignore[call-overload]
            errors.append(str(e))
            if db.failed:
                out["failed"] = db.failed
                break
            if problems(totals(db), acked, attempted):
                out["lost"] = problems(totals(db), acked, attempted)
                break
            if fds:
                os.close(fds.pop())  # one more descriptor free: the next attempt gets further
    else:
        out["gave_up"] = True
    out["first_error"] = errors[0] if errors else None
    out["last_error"] = errors[-1] if errors else None
    for fd in fds:
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    insert(10)
    db.close()
    db = DB(cfg)
    out["problems"] = problems(totals(db), acked, attempted)
    out["acked"] = sorted(acked)
    db.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
