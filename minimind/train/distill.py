"""Knowledge distillation: train a small student on a larger teacher's softened predictions.

The loss is α·CE(labels) + (1 − α)·T²·KL(teacher‖student) on the supervised tokens
(`minimind.losses.distillation_loss`), as upstream MiniMind's `train_distillation.py`. The
teacher runs in eval mode under `torch.no_grad()` on every batch; it may differ from the
student in depth and width, but it must share the student's vocabulary (same tokenizer).

    python -m minimind.train.distill --help
    python -m minimind.train.distill --teacher out/teacher --preset book --alpha 0.5 --temperature 2
    torchrun --nproc_per_node 2 -m minimind.train.distill --teacher out/teacher
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from minimind.losses import distillation_loss
from minimind.train.engine import TrainConfig, load_tokenizer, option, parse_config, resolve_device, train


@dataclass
class DistillConfig(TrainConfig):
    """Distillation: a student (fresh of --preset, or --init_from) learns from --teacher's soft labels."""

    teacher: str = option("", "teacher checkpoint directory (empty: the book's distillation teacher from the zoo)")
    data_path: str = option("", "chat jsonl in the SFT schema (empty: the book's synthetic distill data)")
    out_dir: str = option("out/distill", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(128, "tokens per training sequence (longer ones are truncated)")
    batch_size: int = option(32, "sequences per micro-batch, per process")
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
        input_ids, labels = batch["input_ids"], batch["labels"]
        if alpha == 1.0:  # hard labels only: the teacher's logits would be multiplied by zero
            out = model(input_ids)
            student = out.logits
            loss, metrics = distillation_loss(student, student.detach(), labels, 1.0, temperature)
            aux = out.aux_loss if out.aux_loss is not None else 0.0
            return loss + aux, {"ce": metrics["ce"]}
        with torch.no_grad():
            teacher_logits = teacher(input_ids).logits
        out = model(input_ids)
        loss, metrics = distillation_loss(out.logits, teacher_logits, labels, alpha, temperature, reverse=reverse)
        aux = out.aux_loss if out.aux_loss is not None else 0.0
        return loss + aux, metrics

    return loss_fn


def check_same_vocabulary(student_config, teacher_config, teacher_source: str = "teacher") -> None:
    """Distillation compares distributions token by token: both models need one vocabulary."""
    if student_config.vocab_size != teacher_config.vocab_size:
        raise ValueError(
            f"{teacher_source}: teacher vocabulary ({teacher_config.vocab_size}) differs from the student's "
            f"({student_config.vocab_size}); distill only between models trained with the same tokenizer")


def default_data_path(split: str = "train") -> str:
    from minimind.data.synthetic import dataset_path

    return str(dataset_path("distill", split))


def run(config: DistillConfig, teacher: torch.nn.Module | None = None, student: torch.nn.Module | None = None,
        callbacks=()):
    """Distil per `config` (a teacher / student module given here replaces --teacher / the preset)."""
    from minimind.checkpoint import load_model
    from minimind.datasets import SFTDataset, collate_causal_lm
    from minimind.train.engine import build_model

    if teacher is None:
        teacher_path = config.teacher or str(_zoo_teacher_path())
        teacher = load_model(teacher_path)
    else:
        teacher_path = "teacher module"
    tokenizer = load_tokenizer(config)
    if student is None:
        # a fresh student takes the teacher's vocabulary size; a loaded one is checked below
        student = build_model(config) if config.init_from else build_model(config, vocab_size=teacher.config.vocab_size)
    check_same_vocabulary(student.config, teacher.config, teacher_path)
    teacher.to(resolve_device(config.device))
    dataset = SFTDataset(config.data_path or default_data_path("train"), tokenizer, config.max_seq_len)
    loss_fn = distillation_loss_fn(teacher, config.alpha, config.temperature, config.reverse_kl)
    return train(config, student, dataset, collate_causal_lm, loss_fn, tokenizer=tokenizer, callbacks=callbacks)


def main(argv=None):
    config = parse_config(DistillConfig, argv)
    result = run(config)
    if result.out_dir is not None:
        print(f"saved {result.out_dir} after {result.steps} steps, final loss {result.final_loss:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
