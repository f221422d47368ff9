"""The crash-test child: open a database, insert numbered batches from several threads, report
every acknowledged batch on stdout as it is acknowledged, and wait to be SIGKILLed.

    python tests/crash/child.py CONFIG BATCHES_JSON THREADS

Prints ``READY`` once the database is open (recovery done), ``ACK <b> <duplicate 0|1>`` after
each insert returns, ``DONE`` after a clean close. Runs the periodic flusher (tiny
flush_interval in the config), so kills land during flushes too. Each line is one write(2).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gumshoe.config import load_config
from gumshoe.db import DB
from tests.crash.helpers import batch_rows


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> int:
    config, batches_file, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = DB(load_config(config), auto_flush=True)
    say("READY")
    batches = iter(json.loads(Path(batches_file).read_text()))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                b = next(batches, None)
            if b is None:
                return
            r = db.insert(batch_rows(b), f"b{b}")
            say(f"ACK {b} {int(r.duplicate)}")

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    db.close()
    say("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
