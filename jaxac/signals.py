"""Graceful stopping: SIGINT and SIGTERM ask training to stop at the next safe point instead of
raising inside a jitted call (whose donated input state would then be gone); a second SIGINT
ends the process within a second, wherever it is.

The first request is seen between two of the trainer's calls: A2C after the log interval's
jitted call returns, A3C after the workers' current update. A second SIGINT cannot wait for that:
the main thread may be inside XLA (a long interval, compilation, the final evaluation), where no
Python signal handler runs. So the C-level handler's wake-up byte (`signal.set_wakeup_fd`) is
read by a watcher thread, which ends the process at once (`os._exit`), after `on_abort`: the
metrics already written and the last periodic checkpoint stay as they are on disk.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable

log = logging.getLogger("jaxac")

EXIT_ABORTED = 130


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a request flag while it is active, and a
    second SIGINT into an immediate exit (status 130) after `on_abort(signal name)`.

    Outside the main thread (where handlers cannot be installed) it only offers the flag.
    """

    def __init__(self, on_abort: Callable[[str], None] | None = None):
        self.event = threading.Event()
        self.signal_name: str | None = None
        self.on_abort = on_abort
        self._previous: dict[int, object] = {}
        self._pipe: tuple[int, int] | None = None
        self._previous_wakeup = -1
        self._sigints = 0

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self, name: str = "request") -> None:
        self.signal_name = self.signal_name or name
        self.event.set()

    def _handle(self, signum, frame) -> None:
        self.request(signal.Signals(signum).name)  # the watcher has already counted it

    def _watch(self, fd: int) -> None:
        """Read the signal numbers the C-level handler writes, as they arrive."""
        try:
            self._read_signals(fd)
        finally:
            os.close(fd)

    def _read_signals(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                name = signal.Signals(signum).name
                if signum == signal.SIGINT:
                    self._sigints += 1
                if signum == signal.SIGINT and self._sigints >= 2:
                    self._abort(name)
                self.request(name)

    def _abort(self, name: str) -> None:
        log.error(f"second {name}: ending now; the metrics written so far and the last periodic "
                  "checkpoint are kept")
        try:
            if self.on_abort is not None:
                self.on_abort(name)
        finally:
            for handler in logging.getLogger().handlers + log.handlers:
                handler.flush()
            os._exit(EXIT_ABORTED)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
            read_fd, write_fd = os.pipe()
            os.set_blocking(write_fd, False)
            self._pipe = (read_fd, write_fd)
            self._previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            threading.Thread(target=self._watch, args=(read_fd,), name="jaxac-signals",
                             daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            read_fd, write_fd = self._pipe
            os.close(write_fd)  # the watcher reads end-of-file and ends
            self._pipe = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
