"""bench/lab.py's measuring tools on real processes: a run's seconds, and a meter sampling on its own thread."""

import subprocess
import time

import pytest

from bench.lab import Meter, timed_run


def test_a_run_is_timed_to_its_exit_not_to_a_50_ms_polling_grid():
    # subprocess.run(timeout=...) would first see this exit at 0.2135 s (0.0635 s of doubling waits, then 50 ms steps).
    seconds = timed_run(["sleep", "0.17"], 10)
    assert 0.17 <= seconds < 0.2


def test_a_failed_run_and_one_past_its_timeout_raise():
    with pytest.raises(subprocess.CalledProcessError):
        timed_run(["sh", "-c", "exit 3"], 10)
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        timed_run(["sleep", "30"], 0.3)
    assert time.monotonic() - started < 10, "the child was not killed at the timeout"


def test_the_meter_samples_peak_rss_while_the_block_just_waits():
    # A child that holds 64 MiB for a while and is gone when the block ends: only a sample taken meanwhile sees it.
    child = subprocess.Popen(["python3", "-c", "import time; b = bytearray(64 << 20); b[::4096] = b'x' * (16 << 10); "
                                               "time.sleep(0.6); del b; time.sleep(0.6)"])
    try:
        with Meter([child.pid], sample_every=0.05) as meter:
            child.wait(timeout=30)
    finally:
        child.kill()
    assert meter.seconds >= 1.2
    assert meter.peak_rss >= 64 << 20
