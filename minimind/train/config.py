"""A training stage's configuration: one dataclass whose fields are its options, and the command
line generated from it (`--field value`, with the field's help and default).

A stage subclasses `TrainConfig` and changes defaults or adds fields with `option(default, help)`;
`parse_config(StageConfig, argv)` parses a command line into an instance. The flag is the field's
name (`--max_seq_len`; `--max-seq-len` is accepted too), so the flag, the field and the key in
`train_config.json` are one name.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Optional, Sequence

from minimind.commandline import accept_both_spellings
from minimind.runtime import replica_seed
from minimind.train.metrics import REPORT_TO


def option(default, help: str, choices: Optional[Sequence] = None):
    """A config field with its command-line help (and allowed values)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Options shared by every training stage (stages subclass this and change defaults)."""

    # what to train, on what, where to put it
    preset: str = option("book", "model preset from minimind.config.PRESETS (ignored with --init_from)")
    model_overrides: str = option("", "comma-separated preset overrides, e.g. hidden_size=256,num_hidden_layers=4")
    init_from: str = option("", "checkpoint directory to start from instead of a fresh model")
    tokenizer: str = option("", "tokenizer directory (empty: the one in --init_from, else the book's, trained "
                           "afresh on the synthetic corpus in a second)")
    data_path: str = option("", "training jsonl (empty: the book's synthetic data for this stage)")
    out_dir: str = option("out/train", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(128, "tokens per training sequence (longer ones are truncated)")
    # how long
    epochs: int = option(1, "passes over the data (ignored when --max_steps > 0)")
    max_steps: int = option(0, "optimizer steps to run (0: as many as --epochs take)")
    batch_size: int = option(16, "sequences per micro-batch, per process")
    grad_accum: int = option(1, "micro-batches per optimizer step (gradient accumulation)")
    # optimizer and schedule
    lr: float = option(3e-3, "peak learning rate")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of --lr (cosine schedule)")
    warmup_steps: int = option(0, "linear warm-up steps (cosine schedule)")
    schedule: str = option("cosine", "learning-rate schedule: cosine with warm-up, or upstream's "
                           "lr*(0.1+0.45*(1+cos(pi*t/T))) without warm-up", choices=("cosine", "upstream"))
    weight_decay: float = option(0.1, "AdamW weight decay")
    decay_norms_and_embeddings: bool = option(False, "also decay norm weights, biases and embeddings (upstream does)")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0: no clipping)")
    # precision and speed
    device: str = option("auto", "auto (CUDA if available, else the CPU), cpu, cuda, cuda:N, mps")
    dtype: str = option("auto", "auto (bf16 on CUDA if supported, else fp16; fp32 on CPU), fp32, bf16 "
                        "(autocast), fp16 (autocast + grad scaler, CUDA only)", choices=("auto", "fp32", "bf16", "fp16"))
    compile: bool = option(False, "torch.compile the model")
    grad_checkpointing: bool = option(False, "activation checkpointing: recompute each block's activations in "
                                      "the backward pass (less memory, one more forward pass per block)")
    num_workers: int = option(0, "DataLoader worker processes")
    ddp_find_unused_parameters: bool = option(False, "DDP: allow parameters that get no gradient in a step")
    # bookkeeping
    seed: int = option(replica_seed(42), "seed of model init, data order and dropout (MINIMIND_SEED=s: the "
                       "s-th replicate's, 42 + 1000·s; see minimind.runtime)")
    log_interval: int = option(10, "log a metrics record every N optimizer steps")
    save_interval: int = option(0, "checkpoint every N optimizer steps (0: only at the end)")
    resume: bool = option(False, "continue from out_dir/resume.pt if it exists")
    overwrite: bool = option(False, "start afresh in an out_dir that already holds a training run (without: refused)")
    metrics_file: str = option("", "metrics JSONL path (empty: out_dir/metrics.jsonl)")
    report_to: str = option("none", "also send every logged metric to a live dashboard: tensorboard (events in "
                            "tensorboard/ beside the metrics file) or wandb (if installed); the JSONL stays the "
                            "record", choices=REPORT_TO)
    progress: bool = option(True, "show a progress bar and a start-up summary")

    def __post_init__(self):
        for name in ("batch_size", "grad_accum", "max_seq_len", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "max_steps", "warmup_steps", "save_interval", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must not be negative, got {getattr(self, name)}")
        if self.epochs == 0 and self.max_steps == 0:
            raise ValueError("give --epochs or --max_steps a positive value")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"need lr > 0 and 0 <= min_lr_ratio <= 1, got {self.lr}, {self.min_lr_ratio}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"--{f.name} must be one of {list(choices)}, got {getattr(self, f.name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def preset_defaults(cls, preset: str) -> dict:
        """Defaults that change with `--preset` (stages override this; the command line wins)."""
        return {}


# ---------------------------------------------------------------------------------------------
# The command line, generated from the dataclass


def parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_cli(config_cls: type, description: Optional[str] = None, prog: Optional[str] = None,
              _defaults: bool = True) -> argparse.ArgumentParser:
    """An argparse parser with one `--field` per dataclass field, its help and its default."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description or (config_cls.__doc__ or "").strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        kind = hints[f.name]
        help_text = f.metadata.get("help") or f.name.replace("_", " ")
        default = f.default if _defaults else argparse.SUPPRESS
        if kind is bool:
            # `--resume` alone means true; `--resume false` is also accepted
            parser.add_argument(f"--{f.name}", type=parse_bool, nargs="?", const=True,
                                default=default, metavar="BOOL", help=help_text)
        elif kind in (int, float, str):
            parser.add_argument(f"--{f.name}", type=kind, default=default,
                                choices=f.metadata.get("choices"), help=help_text)
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name}: CLI fields must be bool, int, float or str")
    return accept_both_spellings(parser)


def parse_config(config_cls: type, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None):
    """Parse the command line (`sys.argv[1:]` when argv is None) into a `config_cls` instance.

    Options not given on the command line take `config_cls.preset_defaults(preset)` where it has
    them (e.g. upstream's batch size and learning rate for `--preset minimind2-small`), else
    the dataclass defaults.
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    values = vars(build_cli(config_cls, prog=prog).parse_args(argv))
    given = vars(build_cli(config_cls, prog=prog, _defaults=False).parse_args(argv))
    for name, value in config_cls.preset_defaults(values["preset"]).items():
        if name not in given:
            values[name] = value
    return config_cls(**values)


def parse_overrides(text: str) -> dict:
    """`"hidden_size=256,use_moe=true,dropout=0.1"` → `{"hidden_size": 256, "use_moe": True, "dropout": 0.1}`."""
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model_overrides: expected key=value, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(value.strip())
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return overrides
