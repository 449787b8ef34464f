"""A clean exit for fairseq's background batch loader.

fairseq's ``BufferedIterator`` loads the next ``--data-buffer-size`` batches in a daemon thread, ``BackgroundConsumer``
(fairseq/data/iterators.py:661-689 in fairseq 0.12.3; ``daemon = True`` at line 709). When ``fairseq-train`` stops in
the middle of an epoch (``--max-update``, ``--stop-time-hours``) that thread is usually still collating a batch while
the interpreter shuts down. CPython 3.11 ends a daemon thread that asks for the GIL during shutdown with
``pthread_exit``; inside torch's C++ code that forced unwind crosses a ``noexcept`` frame and calls ``std::terminate``:
the run prints "terminate called without an active exception" and exits with status 134 (SIGABRT) after it finished
and saved everything, which stops any ``set -e`` recipe and any grid that checks the status.

``atexit`` hooks run before daemon threads are stopped, so :func:`install` registers one that asks each live consumer
to stop after the batch it is on (its loop breaks once ``count >= _max_len``, iterators.py:681-683) and empties its
queue until the thread has ended, for at most ``timeout`` seconds.
"""
import atexit
import queue
import threading
import time

TIMEOUT_S = 30.0  # one batch of the slowest loader; after it the exit goes on as fairseq's would


def stop_background_loaders(timeout=TIMEOUT_S):
    """Stop fairseq's live ``BackgroundConsumer`` threads; returns how many were still running when it gave up."""
    try:
        from fairseq.data.iterators import BackgroundConsumer
    except ImportError:
        return 0
    deadline = time.monotonic() + timeout
    consumers = [t for t in threading.enumerate() if isinstance(t, BackgroundConsumer) and t.is_alive()]
    for consumer in consumers:
        consumer._max_len = 0  # break after the next put
    for consumer in consumers:
        while consumer.is_alive() and time.monotonic() < deadline:
            _drain(consumer._queue)  # a full queue would block its put (and the end-of-data put) forever
            consumer.join(0.01)
    return sum(c.is_alive() for c in consumers)


def _drain(q):
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


_installed = False


def install():
    global _installed
    if not _installed:
        atexit.register(stop_background_loaders)
        _installed = True
