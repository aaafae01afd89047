"""Reasoning training: teach a chat model to reply `<think>…</think><answer>…</answer>`.

Supervised fine-tuning on reasoning replies, with the four format tags up-weighted in the loss
(`minimind.losses.reasoning_weighted_loss`): the format is decided at a handful of positions,
which a plain token mean drowns in the content tokens around them.

    python -m minimind.train.reason --help
    python -m minimind.train.reason --init_from out/sft --tag_weight 10 --out_dir out/reason
    torchrun --nproc_per_node 2 -m minimind.train.reason --init_from out/sft

What differs from upstream MiniMind2's `train_reason.py`: the
tags are single tokens, so only the tags themselves are weighted (not every '<', 'th', 'ink'
sub-word anywhere in a reply); and the weighted sum is divided by the sum of the weights
(a weighted mean, on the scale of a cross-entropy whatever the weight) unless
`--loss_normalize tokens` asks for upstream's division by the token count.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minimind.losses import combine_reasoning_terms, supervised_targets
from minimind.train.config import TrainConfig, option, parse_config
from minimind.train.loop import TrainResult, train
from minimind.train.stage import build_model, check_vocabulary, load_tokenizer


@dataclass
class ReasonConfig(TrainConfig):
    """Reasoning fine-tuning: chat SFT on <think>/<answer> replies with the tag tokens up-weighted."""

    init_from: str = option("out/sft", "checkpoint to fine-tune (the chat model `python -m minimind.train.sft` writes)")
    data_path: str = option("", "reasoning jsonl in the SFT schema (empty: the book's synthetic reason data)")
    out_dir: str = option("out/reason", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(192, "tokens per training sequence (longer ones are truncated)")
    max_steps: int = option(450, "optimizer steps to run (0: as many as --epochs take)")
    batch_size: int = option(16, "sequences per micro-batch, per process")
    lr: float = option(2e-3, "peak learning rate")
    warmup_steps: int = option(10, "linear warm-up steps (cosine schedule)")
    tag_weight: float = option(10.0, "loss weight of the <think> </think> <answer> </answer> targets (1 = plain SFT)")
    loss_normalize: str = option(
        "weighted", "divide the weighted sum by the sum of weights (weighted mean) or by the token count "
        "(upstream)", choices=("weighted", "tokens"))


def reasoning_loss_fn(tag_ids, tag_weight: float = 10.0, normalize: str = "weighted"):
    """The engine's loss_fn(model, batch) for reasoning training.

    Besides the loss it reports the plain cross-entropy (`ce`, comparable across tag weights)
    and the cross-entropy on the tag targets alone (`tag_ce`, how sure the model is of the format).
    """
    tag_tensor = torch.tensor([int(i) for i in tag_ids])

    def loss_fn(model, batch):
        # logits only where a reply token is the target (about half the positions of a batch)
        where, targets = supervised_targets(batch["labels"])
        out = model(batch["input_ids"], logits_at=where)
        # one softmax, read three ways: the training loss and the two logged cross-entropies
        per_token = F.cross_entropy(out.logits.float(), targets, reduction="none")  # (N,)
        supervised = torch.ones_like(per_token)
        is_tag = torch.isin(targets, tag_tensor.to(targets.device))
        loss = combine_reasoning_terms(per_token, supervised, is_tag, tag_weight, normalize)
        with torch.no_grad():
            plain = combine_reasoning_terms(per_token, supervised, is_tag, 1.0)  # = masked cross-entropy
            tag_only = combine_reasoning_terms(per_token, is_tag.float(), is_tag, 1.0)
        aux = out.aux_loss if out.aux_loss is not None else 0.0
        return loss + aux, {"ce": plain, "tag_ce": tag_only}

    return loss_fn


def default_data_path(split: str = "train") -> str:
    from minimind.data.synthetic import dataset_path

    return str(dataset_path("reason", split))


def run(config: ReasonConfig, *, model=None, tokenizer=None, callbacks=()) -> TrainResult:
    """Fine-tune `config.init_from` (or the given model) on reasoning replies; returns the TrainResult."""
    from minimind.data.datasets import SFTDataset, collate_causal_lm

    if model is None and not config.init_from:
        raise ValueError("reasoning training starts from a chat model: pass --init_from DIR")
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    if model is None:
        model = build_model(config)
    check_vocabulary(tokenizer, model)
    dataset = SFTDataset(config.data_path or default_data_path("train"), tokenizer, config.max_seq_len)
    loss_fn = reasoning_loss_fn(tokenizer.reasoning_tag_ids, config.tag_weight, config.loss_normalize)
    return train(config, model, dataset, collate_causal_lm, loss_fn, tokenizer=tokenizer, callbacks=callbacks)


def main(argv=None):
    config = parse_config(ReasonConfig, argv)
    result = run(config)
    if result.out_dir is not None and int(os.environ.get("RANK", 0)) == 0:  # one line, not one per torchrun process
        print(f"saved {result.out_dir} after {result.steps} steps, final loss {result.final_loss:.4f}")
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.train.reason", main))
