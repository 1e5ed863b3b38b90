"""Shared measuring helpers for the benchmark scripts (figures printed, never asserted)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def latency_figures(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean in milliseconds of a list of durations in seconds."""
    ordered = sorted(samples_s)
    if not ordered:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def time_calls(call: Callable[[int], object], count: int, max_seconds: float = 60.0) -> list[float]:
    """Run ``call(i)`` up to ``count`` times (bounded by ``max_seconds``) and return durations."""
    samples: list[float] = []
    stop_at = time.monotonic() + max_seconds
    for i in range(count):
        if time.monotonic() > stop_at:
            break
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


def print_row(label: str, figures: dict[str, float]) -> None:
    print(f"{label:<40} " + "  ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
