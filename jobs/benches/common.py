"""What the benchmark parts share: timing with repetitions, and the data they run on."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.train.dataset import read_samples


@dataclass(frozen=True)
class Spread:
    """A measurement repeated: its median and range."""

    median: float
    low: float
    high: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def text(self, fmt: str = ".2f") -> str:
        return f"{self.median:{fmt}} ({self.low:{fmt}}-{self.high:{fmt}})"

    def to_dict(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high, "values": list(self.values)}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load_arrays(uri: str, max_rows: int | None = None) -> np.ndarray:
    return np.stack([s.array for s in read_samples(uri, max_rows=max_rows)])
