"""Progress and cancellation, shared by every long job: a token set from any thread, a progress
callback ``(done, total, what)``, and ``tracked``, the loop they all run."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
Progress = Callable[[int, int, str], None]  # (done, total, what)


class Cancelled(Exception):
    """Work stopped because its CancelToken was set."""


class CancelToken:
    """Set from any thread; long-running work checks it between steps."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def no_progress(done: int, total: int, what: str = "") -> None:
    """The Progress that reports nowhere."""


def check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def tracked(items: Iterable[T], progress: Progress | None = None, cancel: CancelToken | None = None,
            label: Callable[[T], str] = str, total: int | None = None, offset: int = 0,
            finish: bool = True) -> Iterator[T]:
    """Yield ``items``, checking ``cancel`` and reporting ``(offset + i, total, label(item))``
    before each; ``(total, total, "")`` at the end when ``finish``."""
    items = list(items)
    total = offset + len(items) if total is None else total
    tick = progress or no_progress
    for i, item in enumerate(items):
        check(cancel)
        tick(offset + i, total, label(item))
        yield item
    if finish:
        tick(total, total, "")
