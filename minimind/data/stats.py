"""Statistics of a dataset file: the numbers to read before choosing `max_seq_len` and batch size.

For every record it measures the characters of its text and its training length — the tokens
the training data path feeds the model: BOS + text + EOS for a pretraining row, the whole chat
template for a conversation, the longer side for a preference pair. With no tokenizer the
training length falls back to the characters of that same rendering; a trained byte-level BPE
packs about 1.5 Chinese or 4 English characters into a token, so character counts overstate
lengths and the truncation counts made from them are pessimistic. The report gives count,
length percentiles, the script (language) mix, how many samples each `max_seq_len` truncates
and how much of a padded batch would be padding, and saves histograms as PNG.
"""
from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minimind.data.filters import RecordError, dominant_script, record_text
from minimind.files import atomic_write

PERCENTILES = (50, 90, 99)


def record_kind(record: dict) -> str:
    """'pretrain' (`text`), 'sft' (`conversations`) or 'dpo' (`chosen`/`rejected` conversations)."""
    if "text" in record:
        return "pretrain"
    if "conversations" in record:
        return "sft"
    if "chosen" in record and "rejected" in record and isinstance(record["chosen"], list):
        return "dpo"
    raise RecordError(f"not a MiniMind record (fields {sorted(record)}); convert it first "
                      "(python -m minimind.data.prepare convert)")


def load_tokenizer(path):
    """A `MiniMindTokenizer` from a directory holding `tokenizer.json`, or that file itself
    (the book's tokenizers and MiniMind2's released one both load)."""
    from minimind.tokenizer import MiniMindTokenizer

    return MiniMindTokenizer.from_pretrained(path)


def _render_chat(messages) -> str:
    from minimind.tokenizer import template_segments

    try:
        return "".join(segment.text for segment in template_segments(messages))
    except ValueError as error:
        raise RecordError(str(error)) from None


class RecordLength:
    """The training length of a record: tokens with a tokenizer (anything with `.encode(str) ->
    list[int]`), else characters of the same rendering. `unit` says which."""

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer
        self.unit = "tokens" if tokenizer is not None else "chars"

    def _measure(self, text: str, added_tokens: int = 0) -> int:
        if self.tokenizer is None:
            return len(text)
        return len(self.tokenizer.encode(text)) + added_tokens

    def __call__(self, record: dict) -> int:
        kind = record_kind(record)
        if kind == "pretrain":
            if not isinstance(record["text"], str):
                raise RecordError("'text' is not a string")
            return self._measure(record["text"], added_tokens=2)  # the dataset adds BOS and EOS
        if kind == "sft":
            return self._measure(_render_chat(record["conversations"]))
        return max(self._measure(_render_chat(record[side])) for side in ("chosen", "rejected"))


@dataclass
class StatsReport:
    """What `collect_stats` measured. `lengths` are training lengths in `unit`."""

    path: str
    unit: str
    max_seq_lens: tuple
    char_lengths: np.ndarray
    lengths: np.ndarray
    kinds: dict = field(default_factory=dict)
    scripts: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)  # the errors of malformed lines skipped, if any

    @property
    def count(self) -> int:
        return len(self.lengths)

    def truncated(self, max_seq_len: int) -> int:
        """How many samples are longer than `max_seq_len` (and would be cut)."""
        return int((self.lengths > max_seq_len).sum())

    def padding_share(self, max_seq_len: int) -> float:
        """Share of a batch padded to `max_seq_len` that would be padding, not data."""
        if self.count == 0:
            return 0.0
        return float(1.0 - np.minimum(self.lengths, max_seq_len).mean() / max_seq_len)

    @staticmethod
    def _describe(values: np.ndarray) -> dict:
        if len(values) == 0:
            return {"min": 0, "mean": 0.0, **{f"p{p}": 0 for p in PERCENTILES}, "max": 0, "total": 0}
        return {"min": int(values.min()), "mean": round(float(values.mean()), 1),
                **{f"p{p}": int(np.percentile(values, p, method="lower")) for p in PERCENTILES},
                "max": int(values.max()), "total": int(values.sum())}

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "count": self.count,
            "skipped_lines": len(self.skipped),
            "kinds": dict(self.kinds),
            "chars": self._describe(self.char_lengths),
            "length_unit": self.unit,
            "lengths": self._describe(self.lengths),
            "scripts": {name: count for name, count in sorted(self.scripts.items(), key=lambda item: -item[1])},
            "max_seq_len": {str(limit): {"truncated": self.truncated(limit),
                                         "truncated_share": round(self.truncated(limit) / max(self.count, 1), 4),
                                         "padding_share": round(self.padding_share(limit), 4)}
                            for limit in self.max_seq_lens},
        }

    def format(self) -> str:
        """A plain-text report."""
        data = self.to_dict()
        lines = [f"{self.path}: {self.count} samples ({', '.join(f'{k} {v}' for k, v in data['kinds'].items())})"]
        for title, stats in (("chars", data["chars"]), (f"training {self.unit}", data["lengths"])):
            lines.append(f"  {title:<16} min {stats['min']}  mean {stats['mean']}  "
                         + "  ".join(f"p{p} {stats[f'p{p}']}" for p in PERCENTILES)
                         + f"  max {stats['max']}  total {stats['total']}")
        mix = ", ".join(f"{name} {count / max(self.count, 1):.1%}" for name, count in data["scripts"].items())
        lines.append(f"  script mix       {mix}")
        for limit, numbers in data["max_seq_len"].items():
            lines.append(f"  max_seq_len {limit:<5} truncates {numbers['truncated']} ({numbers['truncated_share']:.1%}), "
                         f"padding {numbers['padding_share']:.1%} of a padded batch")
        if self.unit == "chars":
            lines.append("  (no tokenizer: lengths are characters, which overstate tokens)")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} malformed line(s); first: {self.skipped[0]}")
        return "\n".join(lines)

    def plot(self, axes=None):
        """Draw three panels — characters, training lengths with each max_seq_len marked, script
        mix — on `axes` (three matplotlib axes), or on a new Figure, which is returned."""
        figure = None
        if axes is None:
            from matplotlib.figure import Figure

            figure = Figure(figsize=(15, 4), layout="constrained")
            axes = figure.subplots(1, 3)
        self.plot_histogram(axes[0], self.char_lengths, "characters per sample", "characters")
        self.plot_histogram(axes[1], self.lengths, f"training {self.unit} per sample", self.unit, self.max_seq_lens)
        self.plot_scripts(axes[2])
        return figure

    def plot_histogram(self, ax, values: np.ndarray, title: str, xlabel: str, limits=()) -> None:
        top = max([int(np.percentile(values, 99.5)) if len(values) else 1, *limits, 1])
        shown = values[values <= top * 1.1]
        ax.hist(shown, bins=50, color="tab:blue", alpha=0.8)
        for limit in limits:
            ax.axvline(limit, color="tab:red", linestyle="--")
            ax.annotate(f"{limit}: {self.truncated(limit) / max(self.count, 1):.1%} cut", (limit, 0.95),
                        xycoords=("data", "axes fraction"), rotation=90, ha="right", va="top", fontsize=8)
        hidden = len(values) - len(shown)
        ax.set_title(title + (f" ({hidden} longer not shown)" if hidden else ""))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("samples")

    def plot_scripts(self, ax) -> None:
        names = sorted(self.scripts, key=lambda name: -self.scripts[name])
        ax.bar(names, [self.scripts[name] / max(self.count, 1) for name in names], color="tab:green")
        ax.set_title("script mix (dominant script per sample)")
        ax.set_ylabel("share of samples")

    def save(self, out_dir) -> dict:
        """Write `stats.json`, `char_lengths.png`, `training_lengths.png` and `scripts.png` into
        `out_dir` (each atomically); returns their paths by name."""
        from matplotlib.figure import Figure

        out_dir = Path(out_dir)
        paths = {"json": out_dir / "stats.json", "chars": out_dir / "char_lengths.png",
                 "lengths": out_dir / "training_lengths.png", "scripts": out_dir / "scripts.png"}
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"
        atomic_write(paths["json"], lambda temp: Path(temp).write_text(text, encoding="utf-8"))
        panels = {
            "chars": lambda ax: self.plot_histogram(ax, self.char_lengths, "characters per sample", "characters"),
            "lengths": lambda ax: self.plot_histogram(ax, self.lengths, f"training {self.unit} per sample",
                                                      self.unit, self.max_seq_lens),
            "scripts": self.plot_scripts,
        }
        for name, draw in panels.items():
            figure = Figure(figsize=(6, 4), layout="constrained")
            draw(figure.subplots())
            atomic_write(paths[name], lambda temp: figure.savefig(temp, format="png", dpi=100))
        return paths


class StatsCollector:
    """Accumulates the statistics one record at a time (4 bytes per record per length array), so
    a report over a multi-GB file needs no second pass and little memory."""

    def __init__(self, tokenizer=None, max_seq_lens=(512,), path: str = ""):
        self.length = RecordLength(tokenizer)
        self.max_seq_lens = tuple(sorted(int(limit) for limit in max_seq_lens))
        self.path = path
        self.char_lengths = array("I")
        self.lengths = array("I")
        self.kinds: Counter = Counter()
        self.scripts: Counter = Counter()

    def add(self, record: dict) -> None:
        """Measure one record (RecordError if it is not a MiniMind record)."""
        kind = record_kind(record)
        text = record_text(record)
        length = self.length(record)
        self.kinds[kind] += 1
        self.scripts[dominant_script(text)] += 1
        self.char_lengths.append(len(text))
        self.lengths.append(length)

    def report(self) -> StatsReport:
        return StatsReport(self.path, self.length.unit, self.max_seq_lens,
                           np.frombuffer(self.char_lengths, dtype=np.uint32).astype(np.int64),
                           np.frombuffer(self.lengths, dtype=np.uint32).astype(np.int64),
                           dict(self.kinds), dict(self.scripts))


def collect_stats(path, tokenizer=None, max_seq_lens=(512,), *, progress: bool = False,
                  text_unit: str = "line", skip_bad: bool = False) -> StatsReport:
    """Stream `path` (jsonl, text or parquet) once and return its `StatsReport`. A malformed line,
    or a record that is not in a MiniMind schema, raises `DataError` naming the file and line;
    with `skip_bad` it is counted in the report's `skipped` instead."""
    from minimind.data.io import iter_records
    from minimind.data.jsonl import DataError

    collector = StatsCollector(tokenizer, max_seq_lens, path=str(path))
    skipped = []

    def skip(line, error):
        skipped.append(str(error))

    for line, record in iter_records(path, text_unit=text_unit, progress=progress, desc="stats",
                                     on_bad=skip if skip_bad else None):
        try:
            collector.add(record)
        except RecordError as error:
            if not skip_bad:
                raise DataError(f"{path}:{line}: {error}") from None
            skip(line, DataError(f"{path}:{line}: {error}"))
    report = collector.report()
    report.skipped = skipped
    return report
