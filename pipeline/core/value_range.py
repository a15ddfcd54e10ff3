"""The data units a model's [0, 1] stands for (torch-free: archive metadata carries it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import ConfigError


@dataclass(frozen=True)
class ValueRange:
    """The values a model's [0, 1] stands for, in the data's own units."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.hi > self.lo):
            raise ConfigError(f"a value range needs finite LO < HI, got {self.lo}, {self.hi}")

    @property
    def span(self) -> float:
        return self.hi - self.lo

    def to_list(self) -> list[float]:
        return [self.lo, self.hi]

    @classmethod
    def of(cls, data: Any) -> ValueRange | None:
        """From JSON (``[lo, hi]``) or ``--value-range LO,HI``; None stays None."""
        if data is None:
            return None
        try:
            lo, hi = (float(v) for v in (data.split(",") if isinstance(data, str) else data))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"a value range is LO,HI (two numbers), got {data!r}") from err
        return cls(lo, hi)

    def __str__(self) -> str:
        return f"{self.lo:g}..{self.hi:g}"
