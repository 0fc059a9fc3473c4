"""Helpers shared by the benchmark scripts: timing, peak memory, FLOPs, machine peak rate."""

from __future__ import annotations

import os
import statistics
import threading
import time
from contextlib import contextmanager
from typing import Tuple

import torch


def timed(fn, repeats: int = 3, warmup=None):
    """Median wall seconds of ``repeats`` calls and the last result; ``warmup``: a cheaper
    callable run once first (default: ``fn`` itself)."""
    (warmup or fn)()
    times, result = [], None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every ``interval`` s by a
    thread (``.peak`` bytes after exit). CPU allocations only; on GPUs use
    ``torch.cuda.max_memory_allocated``."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0

    def __enter__(self):
        self.base = rss_bytes()
        self._top = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self._top = max(self._top, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._top = max(self._top, rss_bytes())
        self.peak = self._top - self.base


def measure(fn, repeats: int = 1, warmup=None):
    """(median seconds, peak MB above the start, result) of ``fn``."""
    (warmup or fn)()
    with PeakRSS() as mem:
        t, result = timed(fn, repeats, warmup=lambda: None)
    return t, mem.peak / 2**20, result


def count_flops(fn) -> int:
    """Floating-point operations of one call (matrix products, convolutions, attention:
    torch.utils.flop_counter's count; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_matmul_rate(dtype=torch.float32, n: int = 2048, seconds: float = 2.0) -> Tuple[float, str]:
    """Measured matrix-multiply rate of this machine: (FLOP/s, how), the best of repeated
    products in the two layouts models use, ``a @ b`` and ``a @ b.T`` (``nn.Linear``'s).

    Where a dtype is emulated one layout can be over 100x slower than the other (bf16
    ``a @ b`` on an AVX2 CPU: one 2048^3 product took about a minute), so each layout
    starts at 256^3 and grows towards ``n`` only while a product stays well inside the
    time budget; ``how`` names the layout and size of the best rate."""
    best_rate, how = 0.0, ""
    for layout in ("a @ b", "a @ b.T"):
        size, per = 256, float("inf")
        while True:
            a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
            bt = b.T if layout == "a @ b.T" else b
            torch.mm(a, bt)
            t = time.perf_counter()
            torch.mm(a, bt)
            per = time.perf_counter() - t
            if size >= n or per * 8 > seconds / 2:  # the next size would take 8x longer
                break
            size *= 2
        best = per
        end = time.perf_counter() + seconds / 2
        while time.perf_counter() < end:
            t = time.perf_counter()
            torch.mm(a, bt)
            best = min(best, time.perf_counter() - t)
        rate = 2 * size ** 3 / best
        if rate > best_rate:
            best_rate, how = rate, f"{layout}, {size}^3"
    return best_rate, how


@contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
