"""Progress for long runs: a tqdm bar on a terminal, and a plain line every few seconds elsewhere (CI, logs).

A bar redrawn with carriage returns is noise in a log file, and no output at all looks like a hang.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """tqdm's `update`/`set_postfix_str`/`close` interface, printing `desc: done/total (pct) elapsed` every `interval_s`."""

    def __init__(
        self, total: int, desc: str, unit: str = "it", *, interval_s: float = 5.0, stream: TextIO | None = None
    ):
        self.total, self.desc, self.unit, self.interval_s = total, desc, unit, interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.postfix = ""
        self._started = self._last = time.monotonic()

    def set_postfix_str(self, text: str) -> None:
        """The current phase (tqdm's name for it), printed after the count."""
        self.postfix = text

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        phase = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.done}/{self.total} {self.unit}{share}, {now - self._started:.0f} s{phase}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        self._print(time.monotonic())


class _Silent:
    """The interface with nothing printed (progress turned off)."""

    def update(self, count: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


def progress_bar(
    total: int, desc: str, unit: str = "it", *, interval_s: float = 5.0, enabled: bool = True
) -> Any:
    """A tqdm bar when stderr is a terminal, else a `LineProgress`; nothing at all when not `enabled`."""
    if not enabled:
        return _Silent()
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False)
    return LineProgress(total, desc, unit, interval_s=interval_s)
