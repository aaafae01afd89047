"""Training metrics as JSON lines: one record per logged optimizer step, and a plot of them.

A record is a flat dict such as
``{"step": 120, "epoch": 0.4, "loss": 1.93, "lr": 0.0028, "grad_norm": 0.41, "tokens": 245760,
"tokens_per_s": 15210.3, "elapsed_s": 16.2}`` plus whatever a stage's loss function reports
(``"aux_loss"``, ``"reward_margin"``, …). The file is appended to while training runs and
survives a crash; a resumed run first drops the records written after its checkpoint.

The JSONL file is the source of truth. `report_to` also sends every record to a dashboard for
watching a long run live: "tensorboard" (event files in ``tensorboard/`` beside the JSONL file;
``tensorboard --logdir OUT_DIR``) or "wandb" (Weights & Biases, when installed). Every numeric
field becomes a scalar at the record's step; a resumed run drops the dashboard's later steps too.
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


REPORT_TO = ("none", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"


def _scalars(record: dict) -> dict:
    """The numeric fields of a record except its step (booleans are not metrics)."""
    return {k: v for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardReport:
    """Each record's numbers as TensorBoard scalars (flushed per record, so a live dashboard sees them)."""

    def __init__(self, log_dir: Path, keep_up_to_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ValueError(f"--report_to tensorboard: the tensorboard package is not installed ({error}); "
                             "pip install tensorboard") from None
        # purge_step: a resumed run's events replace those the lost steps wrote
        self.writer = SummaryWriter(str(log_dir), purge_step=None if keep_up_to_step is None else keep_up_to_step + 1)

    def write(self, record: dict) -> None:
        for name, value in _scalars(record).items():
            self.writer.add_scalar(name, value, global_step=record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbReport:
    """Each record's numbers logged to a Weights & Biases run (project "minimind", named after the run's folder)."""

    def __init__(self, run_dir: Path, run_config: dict | None, resuming: bool):
        try:
            import wandb
        except ImportError:
            raise ValueError("--report_to wandb: wandb is not installed (pip install wandb), "
                             "or use --report_to tensorboard") from None
        self.wandb = wandb
        self.run = wandb.init(project="minimind", name=run_dir.resolve().name, dir=str(run_dir), config=run_config,
                              resume="allow" if resuming else None)

    def write(self, record: dict) -> None:
        self.run.log(_scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


class MetricsLog:
    """Appends records to a JSONL file (or only keeps them in memory when `path` is None), and to
    the dashboard `report_to` names ("none", "tensorboard", "wandb"; it needs a `path`).
    `run_config` is what the dashboard shows as the run's settings."""

    def __init__(self, path=None, keep_up_to_step: int | None = None, report_to: str = "none",
                 run_config: dict | None = None):
        self.path = Path(path) if path else None
        self.records: list[dict] = []
        self.report = None
        if report_to not in REPORT_TO:
            raise ValueError(f"--report_to must be one of {list(REPORT_TO)}, got {report_to!r}")
        if report_to != "none" and self.path is None:
            raise ValueError(f"--report_to {report_to}: the run writes no metrics file; give --out_dir or --metrics_file")
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open_report(report_to, keep_up_to_step, run_config)  # first: a missing package fails before any write
        if keep_up_to_step is None:
            self.path.write_text("", encoding="utf-8")  # a fresh run starts a fresh file
            return
        # Resuming: keep the history up to the checkpoint, drop what the lost steps logged.
        if self.path.exists():
            self.records = [r for r in read_metrics(self.path) if r.get("step", 0) <= keep_up_to_step]
        from minimind.files import atomic_save_bytes

        atomic_save_bytes(self.path, "".join(json.dumps(r) + "\n" for r in self.records).encode("utf-8"))

    def _open_report(self, report_to: str, keep_up_to_step: int | None, run_config: dict | None) -> None:
        if report_to == "tensorboard":
            self.report = TensorBoardReport(self.path.parent / TENSORBOARD_DIR, keep_up_to_step)
        elif report_to == "wandb":
            self.report = WandbReport(self.path.parent, run_config, resuming=keep_up_to_step is not None)

    def append(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.report is not None:
            self.report.write(record)

    def close(self) -> None:
        """Close the dashboard's writer (the JSONL file needs nothing: each record is written whole)."""
        if self.report is not None:
            self.report.close()
            self.report = None


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
