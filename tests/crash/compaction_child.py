"""The compaction crash-test child: open a tiered database (recovery), then in turns insert a
numbered batch of late rows (spread over days, so into re-rolled ranges too), run one small
compaction step, and every few batches flush (a new run for each interval it touches) and
merge runs (one step: size-tiered with a fanout of 2, or every past interval to one run);
report each acknowledged batch on stdout and wait to be SIGKILLed.

    python tests/crash/compaction_child.py CONFIG NOW BATCHES_JSON STEP_ROWS

Prints ``READY`` once the database is open, ``ACK <b> <duplicate 0|1>`` after each insert
returns, ``STEP <n>`` after each compaction step, ``MERGE <n>`` after each merge step, ``DONE`` after the batches, then compacts
to the end, prints ``COMPACTED`` and closes cleanly. Each line is one write(2).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gumshoe.config import load_config
from gumshoe.db import DB
from tests.crash.helpers import late_rows


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main() -> int:
    config, now, batches_file, step_rows = (sys.argv[1], int(sys.argv[2]), sys.argv[3],
                                            int(sys.argv[4]))
    db = DB(load_config(config))
    db.fanout = 2
    say("READY")
    for k, b in enumerate(json.loads(Path(batches_file).read_text())):
        r = db.insert(late_rows(b, now), f"b{b}")
        say(f"ACK {b} {int(r.duplicate)}")
        say(f"STEP {db.compact(max_rows=step_rows, max_steps=1)}")
        if k % 4 == 3:
            db.flush()
            say(f"MERGE {db.merge(max_steps=1, settle=0.0 if k % 8 == 7 else float('inf'))}")
    say("DONE")
    db.compact(max_rows=step_rows)
    say("COMPACTED")
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
