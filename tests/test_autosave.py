"""Autosave coalesces bursts of changes into few background saves and never drops the last one."""

from __future__ import annotations

import threading

from uniscale_lc.autosave import Autosaver


class Recorder:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls = 0
        self.fail_first = fail_first
        self.saved = threading.Event()

    def save(self) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise OSError("disk full")
        self.saved.set()


def test_a_burst_of_changes_becomes_few_saves_and_close_saves_the_last() -> None:
    recorder = Recorder()
    saver = Autosaver(recorder.save, interval_s=0.5)
    for _ in range(1000):
        saver.request()
    assert recorder.saved.wait(timeout=10.0)  # the first change is saved promptly, in the background
    saver.close()
    # One leading save and at most one more for the rest of the burst, never one per change.
    assert 1 <= recorder.calls <= 2
    saver.flush()
    assert recorder.calls <= 2  # nothing dirty after close: flush writes nothing


def test_interval_zero_saves_synchronously_on_every_change() -> None:
    recorder = Recorder()
    saver = Autosaver(recorder.save, interval_s=0)
    for expected in range(1, 4):
        saver.request()
        assert recorder.calls == expected
    saver.close()


def test_a_failed_save_stays_dirty_and_is_retried() -> None:
    recorder = Recorder(fail_first=1)
    saver = Autosaver(recorder.save, interval_s=0)
    saver.request()
    assert recorder.calls == 1 and saver.failures == 1
    saver.flush()  # still dirty: the next flush saves
    assert recorder.calls == 2 and saver.saves == 1
    saver.close()


def test_the_saver_does_not_keep_its_owner_alive() -> None:
    import gc
    import weakref

    class Owner:
        def __init__(self) -> None:
            self.saves = 0
            self.saver = Autosaver(self.save, interval_s=0.05)

        def save(self) -> None:
            self.saves += 1

    owner = Owner()
    owner.saver.request()
    reference = weakref.ref(owner)
    del owner
    gc.collect()
    assert reference() is None
