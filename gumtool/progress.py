"""Progress on stderr: a redrawn bar on a terminal, plain lines every 5% otherwise (logs, ssh).

No internal imports. Thread-safe: workers call `advance` as they finish pieces of work.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    """`label: done/total (pct%)` on stderr; on a TTY a bar redrawn at most 10 times a second,
    otherwise one line at the start and one each time a 5% boundary is crossed."""

    STEP = 5.0  # percent between plain lines

    def __init__(self, label: str, total: int, stream: TextIO | None = None,
                 tty: bool | None = None, quiet: bool = False) -> None:
        self.label = label
        self.total = max(0, int(total))
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet = quiet
        self._lock = threading.Lock()
        self._last_step = -1
        self._last_draw = 0.0
        self._width = len(str(self.total))
        self._emit(force=True)

    def _pct(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def _text(self) -> str:
        return (f"{self.label}: {self.done:>{self._width}}/{self.total} "
                f"({self._pct():.1f}%)")

    def _emit(self, force: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            now = time.monotonic()
            if not force and now - self._last_draw < 0.1 and self.done < self.total:
                return
            self._last_draw = now
            filled = int(30 * self._pct() / 100)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self._text()}")
            self.stream.flush()
            return
        step = int(self._pct() // self.STEP)
        if force or step > self._last_step:
            self._last_step = step
            self.stream.write(self._text() + "\n")
            self.stream.flush()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done = min(self.total, self.done + n)
            self._emit()

    def finish(self) -> None:
        with self._lock:
            if self.quiet:
                return
            if self.done < self.total and not self.tty:
                return  # stopped early (an error): the last line stands
            if self.tty:
                self._emit(force=True)
                self.stream.write("\n")
                self.stream.flush()
