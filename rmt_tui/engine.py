"""Where the app's analyses run. scipy's LAPACK wrappers hold the GIL for a whole SVD (seconds on a
big layer), which would freeze the UI thread; so by default analyses run in a child process and the
app's worker threads only wait on a pipe. The numbers are the same ``core.scan.analyse_layer``."""
from __future__ import annotations

import itertools
import multiprocessing
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from core.errors import RmtError, RmtWarning
from core.scan import AnalysisOptions, Cancelled, CancelToken, LayerResult, analyse_layer

POLL_SECONDS = 0.05


class InlineEngine:
    """Runs analyses in the calling thread (tests, and anywhere a child process is not wanted)."""

    def __init__(self):
        self._opened: dict[tuple[str, str], object] = {}

    def analyse(self, path: Path, conv_view: str, name: str, options: AnalysisOptions,
                cancel: CancelToken | None = None) -> LayerResult:
        return _analyse(self._opened, str(path), conv_view, name, options)

    def close(self) -> None:
        self._opened.clear()


def _analyse(opened: dict, path: str, conv_view: str, name: str, options: AnalysisOptions) -> LayerResult:
    from core.checkpoint import open_checkpoint

    ckpt = opened.get((path, conv_view))
    if ckpt is None:
        ckpt = opened[(path, conv_view)] = open_checkpoint(path, conv_view)
    return analyse_layer(ckpt, ckpt.layer(name), options)


def _serve(conn) -> None:  # the child process
    opened: dict = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        rid, args = msg
        with warnings.catch_warnings(record=True) as caught:  # e.g. "the cache cannot be written"
            warnings.simplefilter("always", RmtWarning)
            try:
                reply = ("ok", _analyse(opened, *args))
            except RmtError as exc:
                reply = ("error", RmtError(str(exc)))
            except Exception as exc:  # a bug must come back as a message, not kill the server
                reply = ("error", RmtError(f"{type(exc).__name__}: {exc}"))
        notes = [str(w.message) for w in caught if issubclass(w.category, RmtWarning)]
        conn.send((rid, (*reply, notes)))


class ProcessEngine:
    """One long-lived child process (``python -m rmt_tui.engine FD``) serving analyses in request
    order over a socket pair. A plain subprocess, not multiprocessing's spawn: nothing of the
    parent's __main__ is re-run, and its output goes to /dev/null, never to the UI's terminal."""

    def __init__(self, on_warning: Callable[[str], None] | None = None):
        self.on_warning = on_warning  # called (from the waiting thread) with each warning the child raised
        self._conn, child = multiprocessing.Pipe()
        self._proc = subprocess.Popen([sys.executable, "-m", "rmt_tui.engine", str(child.fileno())],
                                      pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child.close()
        self._lock = threading.Lock()
        self._ids = itertools.count()

    def analyse(self, path: Path, conv_view: str, name: str, options: AnalysisOptions,
                cancel: CancelToken | None = None) -> LayerResult:
        """Blocks the calling (worker) thread, not the UI. On cancel it stops waiting; the child
        finishes that layer in the background and its stale reply is dropped."""
        while not self._lock.acquire(timeout=POLL_SECONDS):  # another job's layer is in the child
            if cancel is not None and cancel.cancelled:
                raise Cancelled()
        try:
            rid = next(self._ids)
            try:
                self._conn.send((rid, (str(path), conv_view, name, options)))
                while True:
                    if cancel is not None and cancel.cancelled:
                        raise Cancelled()
                    if not self._conn.poll(POLL_SECONDS):
                        continue
                    got, (status, value, notes) = self._conn.recv()
                    if got == rid:
                        break
            except (EOFError, OSError, BrokenPipeError):
                raise RmtError("the analysis process stopped; restart rmt-tui") from None
        finally:
            self._lock.release()
        for note in notes:
            if self.on_warning is not None:
                self.on_warning(note)
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop at once: an SVD in progress is not waited for."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=5)
        self._conn.close()


ENGINE_NICENESS = 10  # background work: under contention the scheduler gives the UI the cores


if __name__ == "__main__":
    from multiprocessing.connection import Connection

    # BLAS keeps every core busy during an SVD; at normal priority the UI process then waited for a
    # time slice and keys took up to 150 ms during "analyse all" on 2 cores. Niceness costs the
    # analysis nothing when the UI is idle.
    try:
        os.nice(ENGINE_NICENESS)
    except OSError:
        pass
    _serve(Connection(int(sys.argv[1])))
