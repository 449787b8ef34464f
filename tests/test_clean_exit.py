"""fairseq's batch-loader thread no longer aborts the exit of a run that stopped mid-epoch (fairseq_admin/clean_exit.py).

Without the hook the script below exits with SIGABRT ("terminate called without an active exception") on every try
here, and ``fairseq-train --max-update`` did so on about one run in four (CI failure of 2026-12-01).
"""
import subprocess
import sys
import textwrap
import threading
import time

from fairseq.data.iterators import BufferedIterator

from fairseq_admin import clean_exit

# a loader still busy in torch's C++ code when the interpreter shuts down, as fairseq-train's is after --max-update
BUSY_LOADER = textwrap.dedent("""
    import torch
    from fairseq.data.iterators import BufferedIterator
    import fairseq_admin  # noqa: F401  (installs the exit hook, as fairseq-train --user-dir does)
    torch.set_num_threads(1)

    class Busy:
        def __len__(self):
            return 1000

        def __iter__(self):
            for _ in range(1000):
                yield sum(torch.randn(64, 64).sum() for _ in range(50))

    batches = BufferedIterator(2, Busy())
    next(batches)
    print("took one batch")
""")


def test_a_run_that_stops_mid_epoch_exits_cleanly():
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", BUSY_LOADER], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip() == "took one batch"
        assert "terminate called" not in proc.stderr


def test_stopping_ends_the_thread_blocked_on_a_full_queue():
    batches = BufferedIterator(3, list(range(100)))
    assert next(batches) == 0
    deadline = time.monotonic() + 5
    while not batches._queue.full() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batches._queue.full()  # the consumer is blocked in put(), the state an exit finds it in
    assert clean_exit.stop_background_loaders(timeout=5) == 0  # its queue was emptied, so put() returned
    assert not batches._consumer.is_alive()


def test_a_loader_that_never_returns_is_left_after_the_timeout():
    release = threading.Event()

    class Stuck:
        def __len__(self):
            return 2

        def __iter__(self):
            yield 0
            release.wait()
            yield 1

    batches = BufferedIterator(2, Stuck())
    assert next(batches) == 0
    start = time.monotonic()
    assert clean_exit.stop_background_loaders(timeout=0.3) == 1
    assert time.monotonic() - start < 3
    release.set()
    batches._consumer.join(5)
    assert not batches._consumer.is_alive()
