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
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, received[0])
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
