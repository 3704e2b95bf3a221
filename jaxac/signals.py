"""Graceful stopping: SIGINT and SIGTERM ask training to stop at the next safe point instead of
raising inside a jitted call (whose donated input state would then be gone)."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Context manager that turns SIGINT/SIGTERM into a request flag while it is active.

    A second SIGINT while a stop is pending raises KeyboardInterrupt, for a user who really wants
    out. Outside the main thread (where handlers cannot be installed) it only offers the flag.
    """

    def __init__(self):
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self, name: str = "request") -> None:
        self.signal_name = self.signal_name or name
        self.event.set()

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
