"""Autosave off the request path: coalesce "state changed" events into at most one save per interval.

Saving the whole state on every answer puts a file write (and an fsync) on every request; a burst of
1,000 requests then waits on 1,000 saves. Instead a request only marks the state dirty, and one background
thread saves it, at most every `interval_s`. A crash loses at most the updates of the last interval;
`flush()` (and `close()`, and interpreter exit) saves whatever is pending. `interval_s = 0` saves
synchronously on every event, for callers who want no window at all.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections.abc import Callable

logger = logging.getLogger(__name__)

__all__ = ["Autosaver"]

# Savers with unsaved changes, held strongly: a chat dropped without close() stays alive until its changes
# are on disk (by the background thread, or by the exit flush); a saved one is held only weakly again.
_DIRTY: set[Autosaver] = set()
_DIRTY_LOCK = threading.Lock()


class Autosaver:
    """Runs `save` in the background when the state is dirty, no more often than every `interval_s`."""

    def __init__(self, save: Callable[[], object], interval_s: float):
        if not interval_s >= 0:
            raise ValueError("interval_s must be >= 0")
        self.interval_s = float(interval_s)
        self._save = weakref.WeakMethod(save) if hasattr(save, "__self__") else (lambda: save)
        self._pinned: Callable[[], object] | None = None  # the save callable, strongly, while dirty
        self._lock = threading.Lock()
        self._dirty = False
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.saves = 0
        self.failures = 0
        atexit.register(_flush_at_exit, weakref.ref(self))

    def request(self) -> None:
        """The state changed: save it soon (now, when interval_s is 0)."""
        with self._lock:
            self._dirty = True
            if self._pinned is None:
                self._pinned = self._save()
        with _DIRTY_LOCK:
            _DIRTY.add(self)
        if self.interval_s == 0:
            self.flush()
            return
        self._ensure_thread()
        self._wake.set()

    def flush(self) -> None:
        """Save now if anything changed since the last save (synchronous)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            save = self._pinned or self._save()
        if save is None:
            return
        try:
            save()
            self.saves += 1
            with self._lock:
                if not self._dirty:  # nothing new since: hold the chat weakly again
                    self._pinned = None
                    with _DIRTY_LOCK:
                        _DIRTY.discard(self)
        except Exception as exc:
            self.failures += 1
            with self._lock:
                self._dirty = True  # try again at the next event or flush
            # One line per failure (a full disk fails every save; a traceback each time floods the log).
            logger.warning(
                "uniscale: autosave failed (%s: %s); the state stays dirty and will be saved again",
                type(exc).__name__,
                exc,
            )
            logger.debug("uniscale: autosave failure", exc_info=True)

    def close(self) -> None:
        """Save what is pending and stop the background thread."""
        self._stopped.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30.0)
        self.flush()
        with self._lock:  # closed: a save that still fails was logged; do not keep the chat alive for it
            self._pinned = None
        with _DIRTY_LOCK:
            _DIRTY.discard(self)

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stopped.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_run, args=(weakref.ref(self),), name="uniscale-autosave", daemon=True
                )
                self._thread.start()


def _run(reference: weakref.ref[Autosaver]) -> None:
    """The saver thread: wait for a change, save, then rest for the interval (which coalesces a burst)."""
    while True:
        saver = reference()
        if saver is None:
            return
        wake, stopped, interval = saver._wake, saver._stopped, saver.interval_s
        del saver  # hold no strong reference while waiting, so the chat model can be collected
        wake.wait(timeout=60.0)
        if stopped.is_set():
            return
        wake.clear()
        saver = reference()
        if saver is None:
            return
        saver.flush()
        del saver
        if stopped.wait(interval):
            return


def _flush_at_exit(reference: weakref.ref[Autosaver]) -> None:
    saver = reference()
    if saver is not None:
        saver.flush()


def _flush_dirty_at_exit() -> None:
    """Save every chat with unsaved changes, also those dropped without close() (held in `_DIRTY`)."""
    with _DIRTY_LOCK:
        dirty = list(_DIRTY)
    for saver in dirty:
        saver.flush()


atexit.register(_flush_dirty_at_exit)
