"""Reproducibility bands: the range a chapter's float figure may take on any machine.

A figure that float rounding can move — a loss, an accuracy, a max |Δ|, a score of sampled
text — is not the same on every CPU: another processor runs other kernels (MKL and torch pick
them by instruction set), sums in another order, and a few thousand training steps turn a
difference in the last bit into other weights. So the chapters do not compare such a figure
with a stored digit string; they assert it lies in a band measured for it::

    from minimind.checks.bands import expect
    expect("sft.trained.zh", accuracy, n=600)   # n: items behind a proportion

Each band was derived from a measured spread (`scripts/measure_bands.py`): every chapter run
under several seeds (`MINIMIND_SEED`) and kernel paths (`ATEN_CPU_CAPABILITY`,
`MKL_ENABLE_INSTRUCTIONS`), each `expect` call recording its value. For a figure whose runs
read v_1 … v_k the band is

    [min v − pad, max v + pad],  pad = max(max v − min v, floor)

so it is twice as wide as the spread seen; the floor keeps a figure that happened to read the
same in every run from getting a band narrower than its noise: for a proportion of n items two
binomial standard errors (Agresti–Coull, so that 0% and 100% get one too), for any other figure
1e-3 of its size. Proportions are clipped to [0, 1]. A proportion whose band is all of [0, 1]
(its runs disagree by half the range or more) is not checked at all: `expect` prints that the
figure is not reproducible, with the range its runs read, rather than pass whatever it gets.

Environment:
- ``MINIMIND_BANDS_RECORD=path``: record instead of asserting (one JSON line per call, labelled
  with ``MINIMIND_BANDS_RUN``); what the measuring script sets.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

BANDS_FILE = Path(__file__).with_name("bands.json")
RELATIVE_FLOOR = 1e-3


@dataclass(frozen=True)
class Band:
    """The measured range of one figure and the band derived from it."""

    name: str
    lo: float
    hi: float
    low_seen: float  # the smallest and largest value the measuring runs read
    high_seen: float
    runs: int
    proportion: bool = False  # a share of n items (its band is clipped to [0, 1])

    def __contains__(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    @property
    def spans_every_proportion(self) -> bool:
        """True for a proportion's band of [0, 1]: the runs disagree so much that nothing is checked."""
        return self.proportion and self.lo <= 0.0 and self.hi >= 1.0

    def __str__(self) -> str:
        return f"[{_fmt(self.lo)}, {_fmt(self.hi)}] (runs read {_fmt(self.low_seen)}…{_fmt(self.high_seen)}, {self.runs} runs)"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def derive_band(name: str, values: Iterable[float], n: Optional[int] = None) -> Band:
    """The band for a figure whose measuring runs read `values` (see the module docstring)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError(f"{name}: no measured values")
    low, high = min(values), max(values)
    mean = sum(values) / len(values)
    if n:
        # Agresti–Coull: add two successes and two failures, so an all-right run has an error too
        p = (mean * n + 2) / (n + 4)
        floor = 2 * math.sqrt(p * (1 - p) / (n + 4))
    else:
        floor = RELATIVE_FLOOR * abs(mean)
    pad = max(high - low, floor)
    lo, hi = low - pad, high + pad
    if n:
        lo, hi = max(0.0, lo), min(1.0, hi)
    return Band(name, lo, hi, low, high, len(values), proportion=bool(n))


@functools.lru_cache(maxsize=1)
def _bands() -> dict:
    if not BANDS_FILE.exists():
        return {}
    return json.loads(BANDS_FILE.read_text(encoding="utf-8"))["bands"]


def band(name: str) -> Band:
    """The recorded band of figure `name`."""
    entry = _bands().get(name)
    if entry is None:
        raise KeyError(f"no reproducibility band for {name!r} in {BANDS_FILE.name}: "
                       "measure it with scripts/measure_bands.py")
    return Band(name, entry["lo"], entry["hi"], entry["min"], entry["max"], len(entry["values"]),
                proportion=bool(entry.get("n")))


def recorded_values(name: str) -> dict:
    """{run label: value} of figure `name` in the runs its band was measured from."""
    band(name)  # the same error for a figure with no band
    return dict(_bands()[name]["values"])


def expect(name: str, value, n: Optional[int] = None) -> float:
    """Assert that figure `name` lies in its band (`n`: the items a proportion counts). Returns
    the value. Under ``MINIMIND_BANDS_RECORD`` it records the value instead."""
    value = float(value)
    record = os.environ.get("MINIMIND_BANDS_RECORD")
    if record:
        line = {"name": name, "value": value, "n": n, "run": os.environ.get("MINIMIND_BANDS_RUN", "")}
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        return value
    expected = band(name)
    if expected.spans_every_proportion:
        # a band of [0, 1] would pass anything: say so instead of pretending to check
        print(f"(not checked: {name} is not reproducible — the measured runs read "
              f"{_fmt(expected.low_seen)}…{_fmt(expected.high_seen)})")
        return value
    if value not in expected:
        raise AssertionError(f"{name} = {_fmt(value)} is outside its reproducibility band {expected}")
    return value


def expect_outside(name: str, value, what: str) -> None:
    """Assert that `value` — figure `name` measured with the technique switched off (`what`) — lies
    outside the band of `name`: the band is narrow enough to tell the technique from its absence.
    Under ``MINIMIND_BANDS_RECORD`` (the band is being measured) it checks nothing."""
    if os.environ.get("MINIMIND_BANDS_RECORD"):
        return
    expected = band(name)
    value = float(value)
    if value in expected:
        raise AssertionError(f"{what}: {name} = {_fmt(value)} lies inside the band {expected}; "
                             "the band cannot tell the technique from its absence")
    print(f"✓ {what}: {_fmt(value)}, outside the band of {name} {expected}")
