"""Where the app's heavy work runs: analyses, and truncation + evaluation + sweeps.

scipy's LAPACK wrappers hold the GIL for a whole SVD (seconds on a big layer), and evaluation needs
torch, the model and its data (hundreds of MB); so by default both run in child processes
(``python -m rmt_tui.engine FD``) and the app's worker threads only wait on a pipe, forwarding
progress and cancellation. The UI process never imports torch. A request is one of ``core.jobs``'
dataclasses, served by ``core.jobs.run``: the same functions the CLI calls.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import queue
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from core import jobs
from core.errors import RmtError, RmtWarning
from core.jobs import Workspace
from core.progress import Cancelled, CancelToken, Progress

POLL_SECONDS = 0.05


class InlineEngine:
    """Runs requests in the calling thread (tests, and anywhere a child process is not wanted)."""

    def __init__(self):
        self._ws = Workspace()

    def call(self, request, cancel: CancelToken | None = None, progress: Progress | None = None,
             on_item: Callable[[Any], None] | None = None) -> Any:
        """The record ``core.jobs.run`` returns for ``request`` (a core.jobs request dataclass)."""
        return jobs.run(request, progress, cancel or CancelToken(), self._ws, on_item)

    def close(self) -> None:
        self._ws.close()


def _serve(conn) -> None:  # the child process
    """Requests run one at a time on this thread; a reader thread takes cancellations meanwhile."""
    ws, tokens, todo = Workspace(), {}, queue.Queue()

    def read() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is None:
                todo.put(None)
                return
            if msg[0] == "cancel":
                if msg[1] in tokens:
                    tokens[msg[1]].cancel()
                continue
            tokens[msg[1]] = CancelToken()
            todo.put(msg)

    threading.Thread(target=read, daemon=True).start()
    while (msg := todo.get()) is not None:
        _, rid, request = msg
        token = tokens[rid]

        def progress(done, total, what="", rid=rid):
            conn.send((rid, "progress", (done, total, what)))

        def emit(item, rid=rid):
            conn.send((rid, "item", item))

        with warnings.catch_warnings(record=True) as caught:  # e.g. "the cache cannot be written"
            warnings.simplefilter("always", RmtWarning)
            try:
                token.check()
                reply = ("ok", jobs.run(request, progress, token, ws, emit))
            except Cancelled:
                reply = ("cancelled", None)
            except RmtError as exc:
                reply = ("error", RmtError(str(exc)))
            except Exception as exc:  # a bug must come back as a message, not kill the server
                reply = ("error", RmtError(f"{type(exc).__name__}: {exc}"))
        tokens.pop(rid, None)
        notes = [str(w.message) for w in caught if issubclass(w.category, RmtWarning)]
        conn.send((rid, "done", (*reply, notes)))


class ProcessEngine:
    """One long-lived child process serving requests in order over a socket pair, started on the
    first request. A plain subprocess, not multiprocessing's spawn: nothing of the parent's
    __main__ is re-run, and its output goes to /dev/null, never to the UI's terminal."""

    def __init__(self, on_warning: Callable[[str], None] | None = None, start: bool = True):
        self.on_warning = on_warning  # called (from the waiting thread) with each warning the child raised
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._lock = threading.Lock()
        self._ids = itertools.count()
        if start:
            self._start()

    def _start(self) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._proc = subprocess.Popen([sys.executable, "-m", "rmt_tui.engine", str(child.fileno())],
                                      pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        child.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def call(self, request, cancel: CancelToken | None = None, progress: Progress | None = None,
             on_item: Callable[[Any], None] | None = None) -> Any:
        """InlineEngine.call, in the child process. Blocks the calling (worker) thread, not the UI.
        On cancel it tells the child and stops waiting at once; the child stops at its next check
        and its stale reply is dropped."""
        while not self._lock.acquire(timeout=POLL_SECONDS):  # another request is in the child
            if cancel is not None and cancel.cancelled:
                raise Cancelled()
        try:
            if self._proc is None:
                self._start()
            rid = next(self._ids)
            try:
                self._conn.send(("run", rid, request))
                while True:
                    if cancel is not None and cancel.cancelled:
                        self._conn.send(("cancel", rid))
                        raise Cancelled()
                    if not self._conn.poll(POLL_SECONDS):
                        continue
                    got, what, value = self._conn.recv()
                    if got != rid:
                        continue  # a cancelled request's late progress or reply
                    if what == "progress":
                        if progress is not None:
                            progress(*value)
                        continue
                    if what == "item":
                        if on_item is not None:
                            on_item(value)
                        continue
                    status, value, notes = value
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
        if status == "cancelled":
            raise Cancelled()
        return value

    def close(self) -> None:
        """Stop at once: an SVD in progress is not waited for."""
        if self._proc is None:
            return
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
    import signal

    # Asked to stop (the app quitting, a closed SSH session): unwind, so that a cache entry being
    # written loses its temporary file, rather than die where it stands.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *a: sys.exit(130))
    _serve(Connection(int(sys.argv[1])))
