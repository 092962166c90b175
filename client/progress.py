"""One status line redrawn in place, and the transfer progress bar built on it.

A line is redrawn with a carriage return and spaces over what is left of the
previous one, never with ANSI escape codes: a Windows console shows those as
``←[K`` unless virtual-terminal mode was switched on, which Python does not
do. A line is cut to the terminal's width less one column, so that it never
wraps (a console wraps when the last column is written). Callers draw only
when the stream is a terminal; pipes and log files get plain lines.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

__all__ = ["ProgressBar", "StatusLine", "human_bytes"]

_WIDTH = 24


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StatusLine:
    """A line of text at the bottom of a terminal, replaced in place."""

    def __init__(self, stream: TextIO | None = None, columns: int | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._columns = columns
        self._shown = 0

    @property
    def shown(self) -> bool:
        return self._shown > 0

    def show(self, text: str) -> None:
        """Replace the line with ``text`` (cut to fit)."""
        columns = self._columns or shutil.get_terminal_size((80, 24)).columns
        text = text[: max(columns - 1, 10)]
        pad = max(self._shown - len(text), 0)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        """Blank the line and put the cursor at its start (for a message to follow)."""
        if self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def end(self) -> None:
        """Keep the line as it is and move to the next one."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0


class ProgressBar:
    """Redraws at most 10 times a second; ``enabled=False`` makes it silent.

    Used as the ``progress`` callback of ``put``/``get``: ``bar(done, total)``.
    A batch sets ``label`` as files finish and calls the bar with its totals.
    """

    def __init__(
        self,
        label: str,
        *,
        enabled: bool,
        stream: TextIO | None = None,
        columns: int | None = None,
    ) -> None:
        self.label = label
        self.enabled = enabled
        self.line = StatusLine(stream, columns)
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._done = 0
        #: Where the current attempt started (a resumed upload: the server's offset).
        self._base = 0
        self._total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if done < self._done:  # a retry started over, or resumed from the server's offset
            self._start = time.monotonic()
            self._base = done
        self._done, self._total = done, total
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= 0.1:
            self._last_draw = now
            self._draw(now)

    def text(self, now: float) -> str:
        """The bar as drawn at ``now`` (monotonic seconds)."""
        elapsed = max(now - self._start, 1e-6)
        rate = (self._done - self._base) / elapsed
        parts = [self.label]
        if self._total:
            frac = min(self._done / self._total, 1.0)
            filled = int(frac * _WIDTH)
            parts.append("[" + "#" * filled + "." * (_WIDTH - filled) + f"] {frac:4.0%}")
            parts.append(f"{human_bytes(self._done)}/{human_bytes(self._total)}")
        else:
            parts.append(human_bytes(self._done))
        parts.append(f"{rate / 1e6:.1f} MB/s")
        if self._total and rate > 0:
            parts.append("ETA " + _clock(max(self._total - self._done, 0) / rate))
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        self.line.show(self.text(now))

    def clear(self) -> None:
        """Blank the bar so that a message can be printed; it comes back on the next call."""
        self.line.clear()
        self._last_draw = 0.0

    def finish(self) -> None:
        """Draw the final state and end the line (if anything was drawn)."""
        if self.enabled and (self.line.shown or self._done):
            self._draw(time.monotonic())
            self.line.end()
