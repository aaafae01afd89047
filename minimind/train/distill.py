"""Knowledge distillation: train a small student on a larger teacher's softened predictions.

The loss is α·CE(labels) + (1 − α)·T²·KL(teacher‖student) on the supervised tokens
(`minimind.losses.distillation_loss`), as upstream MiniMind's `train_distillation.py`. The
teacher runs in eval mode under `torch.no_grad()` on every batch; it may differ from the
student in depth and width, but it must share the student's vocabulary (same tokenizer).

    python -m minimind.train.distill --help
    python -m minimind.train.distill --teacher out/sft --student_layers 0,2     # half the depth
    python -m minimind.train.distill --teacher out/sft --preset book --model_overrides hidden_size=64
    torchrun --nproc_per_node 2 -m minimind.train.distill --teacher out/sft --student_layers 0,2

The student is either a fresh model (`--preset`, `--model_overrides`), a checkpoint
(`--init_from`), or — `--student_layers 0,2` — the teacher with only the listed layers kept, as
DistilBERT initialises its student from every other teacher layer: a shallower student that
starts with the teacher's embeddings and some of its layers.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minimind.losses import distillation_terms, supervised_targets
from minimind.runtime import resolve_device, seed_everything
from minimind.train.config import TrainConfig, option, parse_config
from minimind.train.loop import TrainResult, train
from minimind.train.stage import build_model, check_vocabulary, load_tokenizer


@dataclass
class DistillConfig(TrainConfig):
    """Distillation: a student (fresh of --preset, or --init_from) learns from --teacher's soft labels."""

    teacher: str = option("out/sft", "teacher checkpoint directory (same tokenizer as the student)")
    tokenizer: str = option("", "tokenizer directory (empty: the one in --init_from, else the teacher's, else the "
                            "book's, trained afresh)")
    student_layers: str = option("", "start the student from these teacher layers, e.g. 0,2 (DistilBERT-style; "
                                 "empty: a fresh student of --preset, or --init_from)")
    data_path: str = option("", "chat jsonl in the SFT schema (empty: the book's synthetic distill data)")
    max_rows: int = option(0, "train on the first N conversations only (0: all)")
    out_dir: str = option("out/distill", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(192, "tokens per training sequence (longer ones are truncated)")
    max_steps: int = option(150, "optimizer steps to run (0: as many as --epochs take)")
    batch_size: int = option(32, "sequences per micro-batch, per process")
    lr: float = option(1e-3, "peak learning rate")
    warmup_steps: int = option(10, "linear warm-up steps (cosine schedule)")
    alpha: float = option(0.5, "weight of the hard-label cross-entropy; 1 - alpha goes to the KL term")
    temperature: float = option(2.0, "softening temperature T of both distributions in the KL term")
    reverse_kl: bool = option(False, "use KL(student‖teacher) (mode-seeking) instead of KL(teacher‖student)")


def distillation_loss_fn(teacher: torch.nn.Module, alpha: float, temperature: float, reverse: bool = False):
    """The engine's loss_fn(model, batch): the student's distillation loss against `teacher`.

    The teacher must already be on the batch's device; it is put in eval mode and frozen here.
    Metrics: `ce` (student vs labels) and `kl` (student vs teacher at temperature T); with
    alpha = 1 (the hard-label baseline) the teacher is not run and only `ce` is reported.
    """
    teacher.eval()
    teacher.requires_grad_(False)

    def loss_fn(model, batch):
        # both models compute logits only where a target exists (one position in six on the book's data)
        where, targets = supervised_targets(batch["labels"])
        input_ids = batch["input_ids"]
        out = model(input_ids, logits_at=where)
        aux = out.aux_loss if out.aux_loss is not None else 0.0
        if alpha == 1.0:  # hard labels only: the teacher's logits would be multiplied by zero
            ce = F.cross_entropy(out.logits.float(), targets) if len(targets) else out.logits.sum() * 0.0
            return ce + aux, {"ce": ce.detach()}
        with torch.no_grad():
            teacher_logits = teacher(input_ids, logits_at=where).logits
        loss, metrics = distillation_terms(out.logits, teacher_logits, targets, alpha, temperature, reverse=reverse)
        return loss + aux, metrics

    return loss_fn


def check_same_vocabulary(student_config, teacher_config, teacher_source: str = "teacher") -> None:
    """Distillation compares distributions token by token: both models need one vocabulary."""
    if student_config.vocab_size != teacher_config.vocab_size:
        raise ValueError(
            f"{teacher_source}: teacher vocabulary ({teacher_config.vocab_size}) differs from the student's "
            f"({student_config.vocab_size}); distill only between models trained with the same tokenizer")


def student_from_teacher(teacher, layers) -> torch.nn.Module:
    """A shallower copy of `teacher` that keeps only the transformer blocks `layers` (in order),
    with the teacher's embeddings, final norm and head: DistilBERT's student initialisation."""
    from minimind.config import MiniMindConfig
    from minimind.model import MiniMind

    layers = [int(i) for i in layers]
    depth = teacher.config.num_hidden_layers
    if not layers or any(not 0 <= i < depth for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"student layers {layers} must be distinct indices of the teacher's {depth} layers")
    config = MiniMindConfig.from_dict({**teacher.config.to_dict(), "num_hidden_layers": len(layers)})
    student = MiniMind(config)
    teacher_state = teacher.state_dict()
    state = {}
    for name in student.state_dict():
        if name.startswith("model.layers."):
            index = int(name.split(".")[2])
            name_in_teacher = name.replace(f"model.layers.{index}.", f"model.layers.{layers[index]}.", 1)
            state[name] = teacher_state[name_in_teacher].detach().clone()
        else:
            state[name] = teacher_state[name].detach().clone()
    student.load_state_dict(state)
    return student


def parse_layers(text: str) -> list[int]:
    """`"0,2"` → `[0, 2]`."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--student_layers: expected comma-separated layer indices, got {text!r}") from None


def default_data_path(split: str = "train") -> str:
    from minimind.data.synthetic import dataset_path

    return str(dataset_path("distill", split))


def run(config: DistillConfig, *, model: torch.nn.Module | None = None, tokenizer=None,
        teacher: torch.nn.Module | None = None, callbacks=()) -> TrainResult:
    """Distil per `config`: the student is `model` if given (else --init_from, --student_layers or a
    fresh --preset), the teacher `teacher` if given (else the checkpoint --teacher)."""
    from minimind.checkpoint import load_model
    from minimind.data.datasets import SFTDataset, collate_causal_lm

    teacher_source = "teacher module"
    if teacher is None:
        teacher_source = config.teacher
        teacher = load_model(config.teacher)
    if not config.tokenizer and not config.init_from and (Path(teacher_source) / "tokenizer.json").exists():
        config = dataclasses.replace(config, tokenizer=teacher_source)  # the student speaks the teacher's tokens
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    student = model
    if student is None:
        if config.student_layers:
            if config.init_from:
                raise ValueError("--student_layers and --init_from both choose the student's start; pass one")
            seed_everything(config.seed)
            student = student_from_teacher(teacher, parse_layers(config.student_layers))
        elif config.init_from:
            student = build_model(config)
        else:  # a fresh student takes the teacher's vocabulary size
            student = build_model(config, vocab_size=teacher.config.vocab_size)
    check_same_vocabulary(student.config, teacher.config, teacher_source)
    check_vocabulary(tokenizer, student)
    teacher.to(resolve_device(config.device, training=True))
    dataset = SFTDataset(config.data_path or default_data_path("train"), tokenizer, config.max_seq_len,
                         max_rows=config.max_rows)
    loss_fn = distillation_loss_fn(teacher, config.alpha, config.temperature, config.reverse_kl)
    return train(config, student, dataset, collate_causal_lm, loss_fn, tokenizer=tokenizer, callbacks=callbacks)


def main(argv=None):
    config = parse_config(DistillConfig, argv)
    result = run(config)
    if result.out_dir is not None and int(os.environ.get("RANK", 0)) == 0:  # one line, not one per torchrun process
        print(f"saved {result.out_dir} after {result.steps} steps, final loss {result.final_loss:.4f}")
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.train.distill", main))
