"""Progress on stderr for the gumtool commands: a tqdm bar (count, rate, ETA) on a terminal,
nothing otherwise (logs, pipes and cron mails get the command's summary, not a line per 5%).

Imports tqdm (a dependency for gumtool import's display too). Thread-safe: workers call
`advance` as they finish pieces of work.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from tqdm import tqdm


class Progress:
    """`label: 40%|####      | done/total [elapsed<eta, rate/s]` on `stream` (stderr), redrawn
    at most 10 times a second, when the stream is a terminal (`tty` overrides the check) and
    not `quiet`."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None,
                 tty: bool | None = None, quiet: bool = False) -> None:
        self.label = label
        self.total = max(0, int(total))
        self.done = 0
        stream = stream if stream is not None else sys.stderr
        shown = not quiet and (stream.isatty() if tty is None else tty)
        self._lock = threading.Lock()
        tqdm.monitor_interval = 0  # no monitor thread: commands may fork workers after this
        self._bar = tqdm(total=self.total, desc=label, file=stream, disable=not shown,
                         mininterval=0.1, dynamic_ncols=True, leave=True)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            n = min(n, self.total - self.done)
            self.done += n
            self._bar.update(n)

    def finish(self) -> None:
        with self._lock:
            self._bar.close()
