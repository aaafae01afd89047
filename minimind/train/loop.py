"""The training loop every stage shares: `train(config, model, dataset, collate_fn, loss_fn)`.

AdamW with optional no-decay groups, cosine schedule with warm-up (or upstream's formula),
gradient accumulation and clipping, precision (fp32 on CPU, bf16 autocast on CUDA, fp16 with a
grad scaler), optional `torch.compile` and activation checkpointing, DDP under torchrun (gloo on
CPU, NCCL on CUDA), a tqdm bar, a metrics JSONL file, atomic checkpoints and exact resume.

Contract of `loss_fn(model, batch) -> (loss, metrics)`: `model` is what to call (possibly
DDP- or compile-wrapped; it runs under the autocast context); `batch` is the collate output
moved to the device; `loss` is a scalar tensor to minimise (the loop divides it by
`grad_accum`); `metrics` maps names to floats or scalar tensors, averaged over micro-batches
and ranks and logged with the step. Tokens/s counts every `input_ids` / `*_ids` tensor.

Checkpoints go to `out_dir` (see `minimind.train.state`): the weights (`save_fn` replaces
`save_model`, e.g. to save only LoRA adapters), the tokenizer if given, `train_config.json`,
`metrics.jsonl` and `resume.pt`. `--resume` continues from it: on CPU the final weights equal
those of an uninterrupted run, bit for bit. A run refuses an `out_dir` that already holds one
unless `--resume` continues it or `--overwrite` replaces it; a run into `out_dir` first deletes
the temporary files that killed writes left there. Each checkpoint writes the weights, then
`resume.pt`; resuming writes the weights of the resumed state again, so a crash between the two
writes leaves no disagreement.

Under `torchrun --nproc_per_node N`, `batch_size` is per process: one optimizer step sees
`batch_size * grad_accum * N` samples, and the data order is the same as one process with
`batch_size * N` (both use `DistributedSampler` with the run's seed).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from minimind.runtime import (Distributed, autocast_context, init_distributed, move_to_device, resolve_device,
                              resolve_dtype, rng_state, seed_everything, set_rng_state)
from minimind.train.config import TrainConfig
from minimind.train.metrics import MetricsLog
from minimind.train.stage import causal_lm_loss
from minimind.train.state import (METRICS_FILE, RESUME_FILE, Resume, TrainState, existing_run_problem,
                                  write_train_config)


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


def count_tokens(batch) -> int:
    """Tokens fed to the model: `input_ids` and every `*_ids` tensor of a dict batch."""
    if isinstance(batch, dict):
        return sum(v.numel() for k, v in batch.items()
                   if isinstance(v, torch.Tensor) and (k == "input_ids" or k.endswith("_ids")))
    return 0


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
    try:
        run = _Run(config, model, dataset, collate_fn, device=device, dtype=dtype, ddp=ddp, params=params,
                   tokenizer=tokenizer, save_fn=save_fn)
        while run.state.step < run.total_steps:
            loader, epoch = run.epoch_loader(), run.state.epoch
            while run.state.epoch == epoch and run.state.step < run.total_steps:
                info, grad_norm = run.step(loader, loss_fn)
                extra = {}
                for callback in callbacks:
                    extra.update(callback(info) or {})
                run.record(info, grad_norm, extra)
                if config.save_interval and info.step % config.save_interval == 0 and info.step < run.total_steps:
                    run.checkpoint()
        return run.finish()
    finally:
        ddp.close()


class _Run:
    """One training run: its data layout, optimizer, position, logs and checkpoints. Built in the
    order exact resume relies on (model and optimizer, the resumed state, then the seeds)."""

    def __init__(self, config: TrainConfig, model: nn.Module, dataset, collate_fn: Callable, *, device: torch.device,
                 dtype: torch.dtype, ddp: Distributed, params, tokenizer, save_fn):
        from torch.utils.data import DistributedSampler

        self.config, self.model, self.dataset, self.collate_fn = config, model, dataset, collate_fn
        self.device, self.dtype, self.ddp, self.save_fn = device, dtype, ddp, save_fn or _save_weights
        self.out_dir = Path(config.out_dir) if config.out_dir else None
        self.resume_path = self.out_dir / RESUME_FILE if self.out_dir else None

        # data: every process draws the same permutation and takes its own stride of it
        self.sampler = DistributedSampler(dataset, num_replicas=ddp.world_size, rank=ddp.rank,
                                          shuffle=True, seed=config.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // config.batch_size // config.grad_accum
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(dataset)} samples are too few for one optimizer step of batch_size {config.batch_size} "
                f"x grad_accum {config.grad_accum} x {ddp.world_size} process(es)")
        self.used_micro_batches = self.steps_per_epoch * config.grad_accum  # leftovers would make a short step
        self.total_steps = config.max_steps if config.max_steps > 0 else config.epochs * self.steps_per_epoch

        # model and optimizer
        model.to(device)
        model.train()
        named = list(params) if params is not None else [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.trainable = [p for _, p in named]
        self.optimizer = torch.optim.AdamW(
            param_groups(named, config.weight_decay, config.decay_norms_and_embeddings),
            lr=config.lr, betas=(config.beta1, config.beta2), fused=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

        # where to start: never over a run that was not asked to be continued or replaced
        self._refuse_an_occupied_out_dir()
        self.state, resume = TrainState(), None
        if config.resume and self.resume_path is not None and self.resume_path.exists():
            resume = Resume.load(self.resume_path)
            resume.check_layout(self.resume_path, batch_size=config.batch_size, grad_accum=config.grad_accum,
                                world_size=ddp.world_size)
            model.load_state_dict(resume.model)
            self.optimizer.load_state_dict(resume.optimizer)
            if resume.scaler is not None:
                self.scaler.load_state_dict(resume.scaler)
            self.state = resume.state
        seed_everything(config.seed + ddp.rank)  # dropout differs per rank, as with separate GPUs
        if resume is not None:
            set_rng_state(resume.rng[ddp.rank])

        if config.grad_checkpointing:
            if not hasattr(model, "gradient_checkpointing_enable"):
                raise ValueError(f"--grad_checkpointing: {type(model).__name__} has no gradient_checkpointing_enable()")
            model.gradient_checkpointing_enable()
        self.train_model = torch.compile(model) if config.compile else model
        if ddp.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.train_model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=config.ddp_find_unused_parameters)

        metrics_path = Path(config.metrics_file) if config.metrics_file else (
            self.out_dir / METRICS_FILE if self.out_dir else None)
        self.log = MetricsLog(metrics_path if ddp.is_main else None,
                              keep_up_to_step=self.state.step if resume is not None else None,
                              report_to=config.report_to if ddp.is_main else "none", run_config=config.to_dict())
        if ddp.is_main and self.out_dir is not None:
            self._prepare_out_dir(tokenizer, resumed=resume is not None)
        self.bar = self._progress_bar() if config.progress and ddp.is_main else None
        self.metric_names: Optional[list[str]] = None
        self.last_loss = float("nan")
        self.window_start, self.window_tokens, self.run_start = time.perf_counter(), 0, time.perf_counter()

    def _refuse_an_occupied_out_dir(self) -> None:
        problem = (existing_run_problem(self.out_dir, self.config.resume, self.config.overwrite)
                   if self.ddp.is_main else None)
        if self.ddp.enabled:  # rank 0 decides for everyone, so no rank waits for a refused run
            decision = [problem]
            dist.broadcast_object_list(decision, src=0)
            problem = decision[0]
        if problem is not None:
            raise ValueError(problem)

    def _prepare_out_dir(self, tokenizer, resumed: bool) -> None:
        from minimind.files import remove_temp_files

        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.out_dir)
        write_train_config(self.out_dir, self.config.to_dict())
        if tokenizer is not None:
            tokenizer.save(self.out_dir)
        if resumed:
            # the weights are written before the resume file: a crash between the two left newer
            # weights than the state we continue from; write the resumed ones, so the pair agrees
            self.save_fn(self.model, self.out_dir)

    def _progress_bar(self):
        from tqdm.auto import tqdm

        config, ddp = self.config, self.ddp
        n_params = sum(p.numel() for p in self.trainable)
        print(f"training {n_params / 1e6:.2f}M parameters on {self.device} ({str(self.dtype).replace('torch.', '')}), "
              f"{ddp.world_size} process(es), {config.batch_size * config.grad_accum * ddp.world_size} "
              f"sequences per step, {self.total_steps} steps ({self.steps_per_epoch} per epoch)")
        return tqdm(total=self.total_steps, initial=self.state.step, desc="train", dynamic_ncols=True)

    def epoch_loader(self):
        """The micro-batches of the current epoch not yet consumed, in the run's seeded order."""
        from torch.utils.data import DataLoader

        config, epoch = self.config, self.state.epoch
        self.sampler.set_epoch(epoch)
        order = list(self.sampler)
        batches = [order[i * config.batch_size:(i + 1) * config.batch_size]
                   for i in range(self.state.batch_in_epoch, self.used_micro_batches)]
        loader_rng = torch.Generator().manual_seed(config.seed * 1000 + epoch)  # keeps the global RNG untouched
        return iter(DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate_fn,
                               num_workers=config.num_workers, pin_memory=self.device.type == "cuda",
                               generator=loader_rng))

    def step(self, loader, loss_fn: Callable) -> tuple[StepInfo, float]:
        """One optimizer step over `grad_accum` micro-batches of `loader`; (what callbacks see, grad norm)."""
        config, ddp, state, device = self.config, self.ddp, self.state, self.device
        lr = learning_rate_at(state.step, self.total_steps, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        metric_sums: dict[str, torch.Tensor] = {}
        step_tokens = 0
        for micro in range(config.grad_accum):
            batch = move_to_device(next(loader), device)
            step_tokens += count_tokens(batch)
            last_micro = micro == config.grad_accum - 1
            sync = self.train_model.no_sync() if ddp.enabled and not last_micro else nullcontext()
            with sync:
                with autocast_context(device, self.dtype):
                    loss, metrics = loss_fn(self.train_model, batch)
                self.scaler.scale(loss / config.grad_accum).backward()
            loss_sum += loss.detach().float()
            for name, value in metrics.items():
                value = torch.as_tensor(value, dtype=torch.float32).detach().to(device)
                metric_sums[name] = metric_sums.get(name, 0) + value
        state.batch_in_epoch += config.grad_accum

        # one collective per step: the loss (for the NaN check and the log), tokens, metrics
        if self.metric_names is None:
            self.metric_names = sorted(metric_sums)
        stats = torch.stack([loss_sum, torch.tensor(float(step_tokens), device=device),
                             *[metric_sums[n].reshape(()) for n in self.metric_names]])
        if ddp.enabled:
            dist.all_reduce(stats)
        stats = stats.tolist()
        micro_batches = config.grad_accum * ddp.world_size
        step_loss = stats[0] / micro_batches
        if not math.isfinite(step_loss):
            raise NonFiniteLossError(
                f"loss is {step_loss} at optimizer step {state.step + 1} of {self.total_steps} (epoch {state.epoch}, "
                f"micro-batches {state.batch_in_epoch - config.grad_accum}-{state.batch_in_epoch - 1}, lr {lr:.3g}); "
                "lower --lr, use --dtype bf16 or fp32 instead of fp16, or check the data")

        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, config.grad_clip if config.grad_clip > 0 else math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

        state.step += 1
        state.tokens += int(stats[1])
        self.window_tokens += int(stats[1])
        self.last_loss = step_loss
        if state.batch_in_epoch >= self.used_micro_batches:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        step_metrics = {n: v / micro_batches for n, v in zip(self.metric_names, stats[2:])}
        info = StepInfo(state.step, self.total_steps, state.step / self.steps_per_epoch, step_loss, lr, self.model,
                        step_metrics)
        return info, float(grad_norm)

    def record(self, info: StepInfo, grad_norm: float, extra: dict) -> None:
        """The step's metrics record (every `log_interval` steps, at the last, and when a callback
        added something) and the progress bar."""
        now = time.perf_counter()
        tokens_per_s = self.window_tokens / max(now - self.window_start, 1e-9)
        if info.step % self.config.log_interval == 0 or info.step == self.total_steps or extra:
            self.log.append({"step": info.step, "epoch": round(info.epoch, 4), "loss": info.loss, "lr": info.lr,
                             "grad_norm": grad_norm, "tokens": self.state.tokens,
                             "tokens_per_s": tokens_per_s, "elapsed_s": now - self.run_start,
                             **info.metrics, **extra})
            self.window_start, self.window_tokens = now, 0
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{info.loss:.4f}", lr=f"{info.lr:.2e}", tok_s=f"{tokens_per_s:,.0f}",
                                 refresh=False)
            self.bar.update(1)

    def checkpoint(self) -> None:
        """The weights, then `resume.pt` (rank 0 writes; every rank contributes its RNG states)."""
        rng_states = [rng_state()]
        if self.ddp.enabled:
            rng_states = [None] * self.ddp.world_size
            dist.all_gather_object(rng_states, rng_state())
        if not self.ddp.is_main or self.out_dir is None:
            return
        self.save_fn(self.model, self.out_dir)
        Resume(
            state=self.state,
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            rng=rng_states, batch_size=self.config.batch_size, grad_accum=self.config.grad_accum,
            world_size=self.ddp.world_size, config=self.config.to_dict(),
        ).save(self.resume_path)

    def finish(self) -> TrainResult:
        if self.bar is not None:
            self.bar.close()
        self.log.close()
        if self.out_dir is not None:
            self.checkpoint()
        return TrainResult(model=self.model, steps=self.state.step, final_loss=self.last_loss, records=self.log.records,
                           out_dir=self.out_dir, tokens=self.state.tokens)


def _save_weights(model: nn.Module, out_dir: Path) -> None:
    from minimind.checkpoint import save_model

    save_model(model, out_dir)
