"""Training metrics as JSON lines: one record per logged optimizer step, and a plot of them.

A record is a flat dict such as
``{"step": 120, "epoch": 0.4, "loss": 1.93, "lr": 0.0028, "grad_norm": 0.41, "tokens": 245760,
"tokens_per_s": 15210.3, "elapsed_s": 16.2}`` plus whatever a stage's loss function reports
(``"aux_loss"``, ``"reward_margin"``, …). The file is appended to while training runs and
survives a crash; a resumed run first drops the records written after its checkpoint.
"""
import json
from pathlib import Path
from typing import Iterable, Sequence


def read_metrics(path) -> list[dict]:
    """All records of a metrics JSONL file, in order (an unfinished last line is ignored)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash can only be the last one
    return records


class MetricsLog:
    """Appends records to a JSONL file (or only keeps them in memory when `path` is None)."""

    def __init__(self, path=None, keep_up_to_step: int | None = None):
        self.path = Path(path) if path else None
        self.records: list[dict] = []
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_up_to_step is None:
            self.path.write_text("", encoding="utf-8")  # a fresh run starts a fresh file
            return
        # Resuming: keep the history up to the checkpoint, drop what the lost steps logged.
        if self.path.exists():
            self.records = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_up_to_step]
        from minimind.checkpoint import atomic_save_bytes

        atomic_save_bytes(self.path, "".join(json.dumps(r) + "\n" for r in self.records).encode("utf-8"))

    def append(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def plot_metrics(records, keys: Sequence[str] = ("loss",), ax=None, x: str = "step",
                 smooth: int = 1, label_prefix: str = "", **plot_kwargs):
    """Plot metric curves from records (a list of dicts) or a metrics JSONL path; returns the axes.

    `smooth` > 1 draws a trailing moving average over that many records.
    """
    import matplotlib.pyplot as plt

    if isinstance(records, (str, Path)):
        records = read_metrics(records)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        points = [(r[x], r[key]) for r in records if key in r and x in r]
        if not points:
            raise KeyError(f"no record has both {x!r} and {key!r}")
        xs, ys = zip(*points)
        ys = _moving_average(ys, smooth)
        ax.plot(xs, ys, label=f"{label_prefix}{key}", **plot_kwargs)
    ax.set_xlabel(x)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def _moving_average(values: Iterable[float], window: int) -> list[float]:
    values = list(values)
    if window <= 1:
        return values
    out, running = [], 0.0
    for i, v in enumerate(values):
        running += v
        if i >= window:
            running -= values[i - window]
        out.append(running / min(i + 1, window))
    return out
