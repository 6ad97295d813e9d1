"""Holding Ctrl-C back while a model is changed in several steps that must all happen."""

import contextlib
import signal
import threading


@contextlib.contextmanager
def deferred():
    """Delivers a SIGINT (Ctrl-C) received inside the block when the block ends.

    A `KeyboardInterrupt` raised between two steps of a reallocation would leave a half-resized
    model (on TensorFlow, one that trains a stale kernel without any error). Only the main
    thread receives signals; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is None:  # a handler installed outside Python: left alone
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            # Delivered again to the handler it was meant for (Python's raises
            # KeyboardInterrupt; the default one ends the process; an ignored one does nothing).
            signal.raise_signal(signal.SIGINT)
