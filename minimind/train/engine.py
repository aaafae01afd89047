"""The training engine every stage shares: a dataclass config turned into a command line, and one loop.

A stage (pretrain, sft, dpo, lora, reason, distill) supplies only what differs: its config
defaults, a dataset with its collate function, and a loss function. The engine does the rest:
AdamW with optional no-decay groups, cosine schedule with warm-up (or upstream's formula),
gradient accumulation and clipping, precision (fp32 on CPU, bf16 autocast on CUDA, fp16 with a
grad scaler), optional `torch.compile`, seeds, DDP under torchrun (gloo on CPU, NCCL on CUDA),
a tqdm bar, a metrics JSONL file, atomic checkpoints and exact resume.

A stage in ten lines::

    @dataclass
    class MyStageConfig(TrainConfig):
        beta: float = option(0.1, "strength of my extra term")
        lr: float = option(1e-4, "peak learning rate")           # a different default

    def my_loss(model, batch):                                   # -> (loss, metrics to log)
        out = model(batch["input_ids"], labels=batch["labels"])
        return out.loss + out.aux_loss, {"lm_loss": out.loss}

    def main(argv=None):
        config = parse_config(MyStageConfig, argv, prog="python -m minimind.train.mystage")
        tokenizer, model = load_tokenizer(config), build_model(config)
        dataset = SFTDataset(config.data_path, tokenizer, config.max_seq_len)
        return train(config, model, dataset, collate_causal_lm, my_loss, tokenizer=tokenizer)

Contract of `loss_fn(model, batch) -> (loss, metrics)`: `model` is what to call (possibly
DDP- or compile-wrapped; it runs under the autocast context); `batch` is the collate output
moved to the device; `loss` is a scalar tensor to minimise (the engine divides it by
`grad_accum`); `metrics` maps names to floats or scalar tensors, averaged over micro-batches
and ranks and logged with the step. Tokens/s counts every `input_ids` / `*_ids` tensor.

Checkpoints go to `out_dir`: `model.safetensors` + `config.json` (what `load_model` and the
exporters read; `save_fn` replaces this, e.g. to save only LoRA adapters), the tokenizer if
given, `train_config.json`, `metrics.jsonl`, and `resume.pt`: fp32 weights, optimizer, grad
scaler, every rank's RNG states and the data position, written atomically and read back with
`torch.load(weights_only=True)`. `--resume` continues from it: on CPU the final weights equal
those of an uninterrupted run, bit for bit. A run refuses an `out_dir` that already holds one
(`train_config.json`, `resume.pt` or `metrics.jsonl`) unless `--resume` continues it or
`--overwrite` replaces it; a run into `out_dir` first deletes the temporary files that killed
writes left there. Each checkpoint writes the weights, then `resume.pt`; resuming writes the
weights of the resumed state again, so a crash between the two writes leaves no disagreement.

Under `torchrun --nproc_per_node N`, `batch_size` is per process: one optimizer step sees
`batch_size * grad_accum * N` samples, and the data order is the same as one process with
`batch_size * N` (both use `DistributedSampler` with the run's seed).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
import typing
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from minimind.losses import IGNORE_INDEX, next_token_targets, supervised_targets
from minimind.runtime import (autocast_context, init_distributed, move_to_device, replica_seed, resolve_device,
                              resolve_dtype, rng_state, seed_everything, set_rng_state)
from minimind.train.metrics import REPORT_TO, MetricsLog

RESUME_FILE = "resume.pt"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
RESUME_FORMAT = "minimind-resume-1"


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
    tokenizer: str = option("", "tokenizer directory (empty: the one in --init_from, else the book's zoo tokenizer)")
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
    device: str = option("auto", "auto (CUDA if available), cpu, cuda, cuda:N")
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


def _parse_bool(text: str) -> bool:
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
            parser.add_argument(f"--{f.name}", type=_parse_bool, nargs="?", const=True,
                                default=default, metavar="BOOL", help=help_text)
        elif kind in (int, float, str):
            parser.add_argument(f"--{f.name}", type=kind, default=default,
                                choices=f.metadata.get("choices"), help=help_text)
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name}: CLI fields must be bool, int, float or str")
    return parser


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


# ---------------------------------------------------------------------------------------------
# Optimizer and schedule


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                 decay_norms_and_embeddings: bool = False) -> list[dict]:
    """AdamW groups: matrices decay; norm weights, biases and embeddings don't (unless asked).

    Decaying a norm's gain pulls it towards 0 rather than towards the identity 1, and decaying
    embeddings shrinks rare tokens' vectors that get few gradient updates to restore them.
    """
    decay, no_decay, seen = [], [], set()
    for name, p in named_params:
        if id(p) in seen:  # tied weights appear once
            continue
        seen.add(id(p))
        if decay_norms_and_embeddings or (p.ndim >= 2 and "embed" not in name):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def learning_rate_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    cosine: linear warm-up to `lr` over `warmup_steps`, then half a cosine down to
    `lr * min_lr_ratio` at the last step. upstream: MiniMind's `lr*(0.1 + 0.45*(1+cos(pi*t/T)))`
    with t = step+1, no warm-up (evaluated per optimizer step, not per micro-step).
    """
    peak = config.lr
    if config.schedule == "upstream":
        return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * (step + 1) / total_steps)))
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    floor = peak * config.min_lr_ratio
    decay_steps = max(1, total_steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Building blocks stages reuse


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


def build_model(config: TrainConfig, **config_overrides) -> nn.Module:
    """A fresh `MiniMind` of `config.preset` (seeded), or the checkpoint in `config.init_from`.

    Overrides come from `--model_overrides`, then from keyword arguments (which win).
    """
    from minimind.checkpoint import load_model
    from minimind.config import get_config
    from minimind.model import MiniMind

    seed_everything(config.seed)
    overrides = {**parse_overrides(config.model_overrides), **config_overrides}
    if config.init_from:
        if overrides:
            raise ValueError("--model_overrides cannot change a model loaded with --init_from")
        if not Path(config.init_from).exists():
            raise FileNotFoundError(f"--init_from {config.init_from}: no such checkpoint")
        return load_model(config.init_from)
    return MiniMind(get_config(config.preset, **overrides))


def check_vocabulary(tokenizer, model: nn.Module) -> None:
    """Every token id the tokenizer can produce must have an embedding row."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}; use a matching --preset/--model_overrides or --tokenizer")


def load_tokenizer(config: TrainConfig):
    """`config.tokenizer` if given, else the tokenizer saved with `init_from`, else the zoo's."""
    from minimind.tokenizer import MiniMindTokenizer

    if config.tokenizer:
        return MiniMindTokenizer.from_pretrained(config.tokenizer)
    if config.init_from and (Path(config.init_from) / "tokenizer.json").exists():
        return MiniMindTokenizer.from_pretrained(config.init_from)
    from minimind import zoo

    return zoo.tokenizer()


def causal_lm_loss(model, batch) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy on `labels` (IGNORE_INDEX ignored) plus the MoE auxiliary loss."""
    labels = batch["labels"]
    out = model(batch["input_ids"], labels=labels)
    lm_loss = out.loss
    if not bool((next_token_targets(labels) != IGNORE_INDEX).any()):
        # every reply in this micro-batch was cut off by truncation: nothing to learn, and the
        # mean over zero targets would be NaN; a zero that touches every parameter keeps DDP happy
        lm_loss = out.logits.sum() * 0.0
    aux = out.aux_loss if out.aux_loss is not None else 0.0
    return lm_loss + aux, {"lm_loss": lm_loss.detach(), "aux_loss": aux}


def supervised_lm_loss(model, batch) -> tuple[torch.Tensor, dict]:
    """`causal_lm_loss` with the LM head run only where a target exists (`logits_at`).

    For data in which many positions carry no target — SFT, where the prompt and the template
    are not learned — this skips the vocabulary projection and its softmax there: the same loss
    and gradients up to float rounding, in less time (benchmarks/README.md measures it).
    Packed pretraining supervises every position, so it keeps `causal_lm_loss`.
    """
    where, targets = supervised_targets(batch["labels"])
    out = model(batch["input_ids"], logits_at=where)
    if targets.numel():
        lm_loss = F.cross_entropy(out.logits.float(), targets)
    else:  # nothing to learn in this micro-batch (see causal_lm_loss); zero gradients reach every parameter
        lm_loss = out.logits.sum() * 0.0
    aux = out.aux_loss if out.aux_loss is not None else 0.0
    return lm_loss + aux, {"lm_loss": lm_loss.detach(), "aux_loss": aux}


def count_tokens(batch) -> int:
    """Tokens fed to the model: `input_ids` and every `*_ids` tensor of a dict batch."""
    if isinstance(batch, dict):
        return sum(v.numel() for k, v in batch.items()
                   if isinstance(v, torch.Tensor) and (k == "input_ids" or k.endswith("_ids")))
    return 0


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


@dataclass
class StepInfo:
    """What a callback sees after each optimizer step (on every rank)."""

    step: int  # optimizer steps done so far (1 after the first)
    total_steps: int
    epoch: float  # passes over the data so far (1.5 = halfway through the second)
    loss: float
    lr: float
    model: nn.Module  # the unwrapped model
    metrics: dict


@dataclass
class TrainResult:
    model: nn.Module  # unwrapped, on the training device, in train() mode
    steps: int
    final_loss: float
    records: list[dict]  # every metrics record of this run (the resumed part included)
    out_dir: Optional[Path]
    tokens: int


# ---------------------------------------------------------------------------------------------
# Checkpoints and resume


def _save_bytes(path: Path, payload: bytes) -> None:
    from minimind.files import atomic_save_bytes

    atomic_save_bytes(path, payload)


def save_resume_state(path: Path, state: dict) -> None:
    """Write the resume file atomically: a crash mid-write leaves the previous one intact."""
    from minimind.files import atomic_write

    def write(temp):
        with open(temp, "wb") as f:  # through a Python file, so a full disk surfaces as an OSError
            torch.save(state, f)

    atomic_write(path, write)


def load_resume_state(path: Path) -> dict:
    """Read a resume file with `weights_only=True` (tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a damaged file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: not a readable resume file ({reason}); delete it to start afresh, "
                         "or restore it") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ValueError(f"{path}: not a MiniMind resume file (expected format {RESUME_FORMAT!r})")
    return state


# ---------------------------------------------------------------------------------------------
# The loop


def train(
    config: TrainConfig,
    model: nn.Module,
    dataset,
    collate_fn: Callable,
    loss_fn: Callable = causal_lm_loss,
    *,
    params: Optional[Iterable[tuple[str, nn.Parameter]]] = None,
    tokenizer=None,
    save_fn: Optional[Callable[[nn.Module, Path], Any]] = None,
    callbacks: Sequence[Callable[[StepInfo], Optional[dict]]] = (),
) -> TrainResult:
    """Train `model` on `dataset` with `loss_fn`; see the module docstring for the contract.

    params: (name, parameter) pairs to optimise (default: every parameter that requires grad).
    tokenizer: saved into `out_dir` beside the weights. save_fn(model, out_dir): replaces
    `save_model` for the weights (e.g. LoRA adapters only). callbacks(info) run after every
    optimizer step; a dict they return is added to that step's metrics record.
    """
    device = resolve_device(config.device, training=True)
    dtype = resolve_dtype(config.dtype, device, training=True)
    ddp = init_distributed(device)
    out_dir = Path(config.out_dir) if config.out_dir else None
    metrics_path = Path(config.metrics_file) if config.metrics_file else (out_dir / METRICS_FILE if out_dir else None)
    resume_path = out_dir / RESUME_FILE if out_dir else None
    try:
        return _run(config, model, dataset, collate_fn, loss_fn, params, tokenizer, save_fn, callbacks,
                    device, dtype, ddp, out_dir, metrics_path, resume_path)
    finally:
        if ddp.created_group:
            dist.destroy_process_group()


def _run(config, model, dataset, collate_fn, loss_fn, params, tokenizer, save_fn, callbacks,
         device, dtype, ddp, out_dir, metrics_path, resume_path):
    from torch.utils.data import DataLoader, DistributedSampler

    # --- data: every process draws the same permutation and takes its own stride of it
    sampler = DistributedSampler(dataset, num_replicas=ddp.world_size, rank=ddp.rank,
                                 shuffle=True, seed=config.seed, drop_last=True)
    micro_batches_per_epoch = len(sampler) // config.batch_size
    steps_per_epoch = micro_batches_per_epoch // config.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} samples are too few for one optimizer step of batch_size {config.batch_size} "
            f"x grad_accum {config.grad_accum} x {ddp.world_size} process(es)")
    used_micro_batches = steps_per_epoch * config.grad_accum  # leftovers would make a short step
    total_steps = config.max_steps if config.max_steps > 0 else config.epochs * steps_per_epoch

    # --- model and optimizer
    model.to(device)
    model.train()
    named = list(params) if params is not None else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in named]
    optimizer = torch.optim.AdamW(
        param_groups(named, config.weight_decay, config.decay_norms_and_embeddings),
        lr=config.lr, betas=(config.beta1, config.beta2), fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    # --- where to start: never over a run that was not asked to be continued or replaced
    problem = _out_dir_problem(config, out_dir, resume_path) if ddp.is_main else None
    if ddp.enabled:  # rank 0 decides for everyone, so no rank waits for a refused run
        decision = [problem]
        dist.broadcast_object_list(decision, src=0)
        problem = decision[0]
    if problem is not None:
        raise ValueError(problem)
    step, epoch, batch_in_epoch, tokens_seen = 0, 0, 0, 0
    resume_state = None
    if config.resume and resume_path is not None and resume_path.exists():
        resume_state = load_resume_state(resume_path)
        for key in ("batch_size", "grad_accum", "world_size"):
            current = ddp.world_size if key == "world_size" else getattr(config, key)
            if resume_state[key] != current:
                raise ValueError(f"{resume_path}: saved with {key}={resume_state[key]}, now {current}; "
                                 "resume needs the same batch layout to continue the same data order")
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if resume_state["scaler"] is not None:
            scaler.load_state_dict(resume_state["scaler"])
        step, epoch = resume_state["step"], resume_state["epoch"]
        batch_in_epoch, tokens_seen = resume_state["batch_in_epoch"], resume_state["tokens"]
    seed_everything(config.seed + ddp.rank)  # dropout differs per rank, as with separate GPUs
    if resume_state is not None:
        set_rng_state(resume_state["rng"][ddp.rank])

    if config.grad_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ValueError(f"--grad_checkpointing: {type(model).__name__} has no gradient_checkpointing_enable()")
        model.gradient_checkpointing_enable()
    train_model = torch.compile(model) if config.compile else model
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.ddp_find_unused_parameters)

    log = MetricsLog(metrics_path if ddp.is_main else None,
                     keep_up_to_step=step if resume_state is not None else None,
                     report_to=config.report_to if ddp.is_main else "none", run_config=config.to_dict())
    if ddp.is_main and out_dir is not None:
        from minimind.files import remove_temp_files

        out_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(out_dir)
        _save_bytes(out_dir / TRAIN_CONFIG_FILE, (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        if tokenizer is not None:
            tokenizer.save(out_dir)
        if resume_state is not None:
            # the weights are written before the resume file: a crash between the two left newer
            # weights than the state we continue from; write the resumed ones, so the pair agrees
            (save_fn or _save_weights)(model, out_dir)

    bar = None
    if config.progress and ddp.is_main:
        from tqdm.auto import tqdm

        n_params = sum(p.numel() for p in trainable)
        print(f"training {n_params / 1e6:.2f}M parameters on {device} ({str(dtype).replace('torch.', '')}), "
              f"{ddp.world_size} process(es), {config.batch_size * config.grad_accum * ddp.world_size} "
              f"sequences per step, {total_steps} steps ({steps_per_epoch} per epoch)")
        bar = tqdm(total=total_steps, initial=step, desc="train", dynamic_ncols=True)

    def checkpoint():
        rng_states = [rng_state()]
        if ddp.enabled:
            rng_states = [None] * ddp.world_size
            dist.all_gather_object(rng_states, rng_state())
        if not ddp.is_main or out_dir is None:
            return
        (save_fn or _save_weights)(model, out_dir)
        save_resume_state(resume_path, {
            "format": RESUME_FORMAT,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},  # fp32, not fp16 (§8.4)
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "tokens": tokens_seen,
            "batch_size": config.batch_size, "grad_accum": config.grad_accum, "world_size": ddp.world_size,
            "rng": rng_states, "config": config.to_dict(),
        })

    metric_names: Optional[list[str]] = None
    last_loss = float("nan")
    window_start, window_tokens, run_start = time.perf_counter(), 0, time.perf_counter()
    while step < total_steps:
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i * config.batch_size:(i + 1) * config.batch_size]
                   for i in range(batch_in_epoch, used_micro_batches)]
        loader_rng = torch.Generator().manual_seed(config.seed * 1000 + epoch)  # keeps the global RNG untouched
        loader = iter(DataLoader(dataset, batch_sampler=batches, collate_fn=collate_fn,
                                 num_workers=config.num_workers, pin_memory=device.type == "cuda",
                                 generator=loader_rng))
        loader_epoch = epoch
        while epoch == loader_epoch and step < total_steps:
            lr = learning_rate_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            metric_sums: dict[str, torch.Tensor] = {}
            step_tokens = 0
            for micro in range(config.grad_accum):
                batch = move_to_device(next(loader), device)
                step_tokens += count_tokens(batch)
                last_micro = micro == config.grad_accum - 1
                sync = train_model.no_sync() if ddp.enabled and not last_micro else nullcontext()
                with sync:
                    with autocast_context(device, dtype):
                        loss, metrics = loss_fn(train_model, batch)
                    scaler.scale(loss / config.grad_accum).backward()
                loss_sum += loss.detach().float()
                for name, value in metrics.items():
                    value = torch.as_tensor(value, dtype=torch.float32).detach().to(device)
                    metric_sums[name] = metric_sums.get(name, 0) + value
            batch_in_epoch += config.grad_accum

            # one collective per step: the loss (for the NaN check and the log), tokens, metrics
            if metric_names is None:
                metric_names = sorted(metric_sums)
            stats = torch.stack([loss_sum, torch.tensor(float(step_tokens), device=device),
                                 *[metric_sums[n].reshape(()) for n in metric_names]])
            if ddp.enabled:
                dist.all_reduce(stats)
            stats = stats.tolist()
            step_loss = stats[0] / (config.grad_accum * ddp.world_size)
            if not math.isfinite(step_loss):
                raise NonFiniteLossError(
                    f"loss is {step_loss} at optimizer step {step + 1} of {total_steps} (epoch {epoch}, "
                    f"micro-batches {batch_in_epoch - config.grad_accum}-{batch_in_epoch - 1}, lr {lr:.3g}); "
                    "lower --lr, use --dtype bf16 or fp32 instead of fp16, or check the data")

            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip if config.grad_clip > 0 else math.inf)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)

            step += 1
            step_tokens_all = int(stats[1])
            tokens_seen += step_tokens_all
            window_tokens += step_tokens_all
            last_loss = step_loss
            if batch_in_epoch >= used_micro_batches:
                epoch, batch_in_epoch = epoch + 1, 0
            epochs_done = step / steps_per_epoch
            step_metrics = {n: v / (config.grad_accum * ddp.world_size) for n, v in zip(metric_names, stats[2:])}

            extra = {}
            info = StepInfo(step, total_steps, epochs_done, step_loss, lr, model, step_metrics)
            for callback in callbacks:
                extra.update(callback(info) or {})
            now = time.perf_counter()
            tokens_per_s = window_tokens / max(now - window_start, 1e-9)
            if step % config.log_interval == 0 or step == total_steps or extra:
                log.append({"step": step, "epoch": round(epochs_done, 4), "loss": step_loss, "lr": lr,
                            "grad_norm": float(grad_norm), "tokens": tokens_seen,
                            "tokens_per_s": tokens_per_s, "elapsed_s": now - run_start,
                            **step_metrics, **extra})
                window_start, window_tokens = now, 0
            if bar is not None:
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
                bar.update(1)
            if config.save_interval and step % config.save_interval == 0 and step < total_steps:
                checkpoint()

    if bar is not None:
        bar.close()
    log.close()
    if out_dir is not None:
        checkpoint()
    return TrainResult(model=model, steps=step, final_loss=last_loss, records=log.records,
                       out_dir=out_dir, tokens=tokens_seen)


def _out_dir_problem(config: TrainConfig, out_dir: Optional[Path], resume_path: Optional[Path]) -> Optional[str]:
    """Why this run must not write into `out_dir` (it holds a run that --resume does not
    continue and --overwrite does not replace), or None."""
    if out_dir is None or config.overwrite or (config.resume and resume_path.exists()):
        return None
    found = [name for name in (TRAIN_CONFIG_FILE, RESUME_FILE, METRICS_FILE) if (out_dir / name).exists()]
    if not found:
        return None
    return (f"{out_dir} already holds a training run ({', '.join(found)}): pass --resume to continue it "
            f"(from its {RESUME_FILE}), --overwrite to replace it, or another --out_dir")


def _save_weights(model: nn.Module, out_dir: Path) -> None:
    from minimind.checkpoint import save_model

    save_model(model, out_dir)
