"""Direct Preference Optimization: teach a chat model to prefer one reply over another.

    python -m minimind.train.dpo                          # out/sft (python -m minimind.train.sft) on the synthetic pairs
    python -m minimind.train.dpo --init_from out/sft --data_path dpo.jsonl --preset minimind2-small
    torchrun --nproc_per_node 2 -m minimind.train.dpo …   # several processes, same options

Each row of the data is ``{"chosen": [messages], "rejected": [messages]}``: one prompt, two
replies. The policy starts as a copy of the model in ``--init_from`` and is trained with
:func:`minimind.losses.dpo_loss` against that same model frozen as the reference.

The reference only ever contributes two numbers per pair, log π_ref(chosen) and
log π_ref(rejected), and it never changes. ``--reference precomputed`` (the default) computes
them once, before training, with one forward pass over the data, and then trains with no second
model in memory and one forward pass per step instead of two; ``--reference model`` keeps a
frozen copy and runs it on every batch (upstream's way; needed only if the data is generated on
the fly). Both give the same training, step for step.

Sequence log-probs are summed over the reply tokens by default (``--logps sum``): that is the
log π(y|x) the DPO derivation is about, so β keeps its meaning as the strength of the KL
penalty. ``--logps mean`` divides by the reply length (upstream MiniMind2's choice, issues #298,
#659): pairs of different lengths then weigh the same, but each token's log-ratio is divided
by the length, so the same β pulls far less hard and needs to be raised by about the typical
reply length to train at the same speed.

Plain DPO only widens the *gap* between the two replies; it is free to lower both, and on a small
model it soon does, eroding what the replies share (facts, spelling) until generations degrade.
``--sft_weight`` (default 1.0) adds the cross-entropy of the chosen replies to the loss, as in
RPO (Pang et al. 2024) and upstream's request #817: the chosen reply stays likely while the margin
grows. ``--sft_weight 0`` is plain DPO; chapter 6 compares the two.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from minimind.data.datasets import REFERENCE_KEYS, DPODataset, collate_dpo
from minimind.losses import IGNORE_INDEX, dpo_loss, masked_cross_entropy, sequence_logps
from minimind.runtime import autocast_context, move_to_device, resolve_device, resolve_dtype
from minimind.train.config import TrainConfig, option, parse_config
from minimind.train.loop import TrainResult, train
from minimind.train.stage import build_model, load_tokenizer

@dataclass
class DPOConfig(TrainConfig):
    """Direct Preference Optimization on {"chosen", "rejected"} pairs (python -m minimind.train.dpo)."""

    init_from: str = option("out/sft", "checkpoint to align, also the frozen reference (the chat model "
                            "`python -m minimind.train.sft` writes)")
    data_path: str = option("", "preference-pair jsonl (empty: the book's synthetic DPO pairs)")
    out_dir: str = option("out/dpo", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(160, "tokens per conversation (prompt + reply; longer ones are truncated)")
    batch_size: int = option(16, "preference pairs per micro-batch (each pair is two sequences)")
    epochs: int = option(2, "passes over the pairs (ignored when --max_steps > 0)")
    lr: float = option(1e-4, "peak learning rate (DPO moves a trained model: below SFT's)")
    warmup_steps: int = option(5, "linear warm-up steps")
    weight_decay: float = option(0.0, "AdamW weight decay (the reference, not decay, keeps the policy close)")
    beta: float = option(0.1, "β: reward scale; small β lets the policy drift further from the reference")
    logps: str = option("sum", "per-sequence log-prob: sum over reply tokens (the DPO paper) or their mean",
                        choices=("sum", "mean"))
    reference: str = option("precomputed", "reference log-probs computed once before training, or a frozen model "
                            "copy run on every batch", choices=("precomputed", "model"))
    label_smoothing: float = option(0.0, "conservative DPO: assume each preference label is flipped with this "
                                    "probability, in [0, 0.5)")
    sft_weight: float = option(1.0, "add this times the cross-entropy of the chosen replies (0: plain DPO); "
                               "keeps the chosen replies likely while the margin grows")

    def __post_init__(self):
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"--beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"--label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        if self.sft_weight < 0:
            raise ValueError(f"--sft_weight must be >= 0, got {self.sft_weight}")


# ---------------------------------------------------------------------------------------------
# Log-probs and the loss


def pair_logps(model: nn.Module, batch: dict, average: bool):
    """Sequence log-probs of the chosen and rejected replies, from one forward pass over both.

    Returns (chosen_logps, rejected_logps, chosen_logits); the logits let a caller add an SFT term.
    """
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])  # (2B, T): chosen rows first
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
    logits = model(ids).logits
    logps = sequence_logps(logits, ids, mask, average=average)
    chosen, rejected = logps.chunk(2)
    return chosen, rejected, logits[: len(chosen)]


@torch.no_grad()
def compute_reference_logps(model: nn.Module, dataset: DPODataset, batch_size: int = 32,
                            average: bool = False, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """log π_ref(chosen), log π_ref(rejected) for every pair, shape (N, 2), in dataset order.

    Run once with the model that training starts from (the reference); under torchrun every
    process computes the whole table, so all of them can serve any pair the sampler hands them.
    """
    was_training = model.training
    model.eval()
    table = []
    for start in range(0, len(dataset), batch_size):
        batch = collate_dpo([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        batch = move_to_device(batch, torch.device(device))
        with autocast_context(torch.device(device), dtype):
            chosen, rejected, _ = pair_logps(model, batch, average)
        table.append(torch.stack([chosen, rejected], dim=1).float().cpu())
    model.train(was_training)
    return torch.cat(table)


def make_dpo_loss(config: DPOConfig, reference_model: Optional[nn.Module] = None):
    """The engine's loss_fn(model, batch) -> (loss, metrics) for these DPO options.

    The reference log-probs come from the batch (precomputed) or, if absent, from
    `reference_model` run without gradients. Logged: loss, dpo_loss (without the SFT term),
    reward_margin, preference_accuracy, chosen/rejected rewards and log-probs.
    """
    average = config.logps == "mean"

    def loss_fn(model, batch):
        policy_chosen, policy_rejected, chosen_logits = pair_logps(model, batch, average)
        if REFERENCE_KEYS[0] in batch:
            reference_chosen, reference_rejected = batch[REFERENCE_KEYS[0]], batch[REFERENCE_KEYS[1]]
        elif reference_model is not None:
            with torch.no_grad():
                reference_chosen, reference_rejected, _ = pair_logps(reference_model, batch, average)
        else:
            raise ValueError("no reference log-probs in the batch and no reference model")
        loss, metrics = dpo_loss(policy_chosen, policy_rejected, reference_chosen.float(),
                                 reference_rejected.float(), config.beta, config.label_smoothing)
        metrics["dpo_loss"] = loss.detach()
        if config.sft_weight:
            chosen_labels = batch["chosen_ids"].masked_fill(~batch["chosen_mask"].bool(), IGNORE_INDEX)
            sft = masked_cross_entropy(chosen_logits, chosen_labels)
            loss = loss + config.sft_weight * sft
            metrics["sft_loss"] = sft.detach()
        return loss, metrics

    return loss_fn


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` whose parameters need no gradient: the DPO reference."""
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


# ---------------------------------------------------------------------------------------------
# Putting it together


def run(config: DPOConfig, *, model: Optional[nn.Module] = None, tokenizer=None, callbacks=()) -> TrainResult:
    """Train `model` (default: the checkpoint in `--init_from`) with DPO; returns the TrainResult."""
    if model is None and not config.init_from:
        raise ValueError("DPO starts from a chat model: pass --init_from DIR")
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    if model is None:
        model = build_model(config)
    data_path = config.data_path
    if not data_path:
        from minimind.data.synthetic import dataset_path

        data_path = dataset_path("dpo", "train")
    dataset = DPODataset(data_path, tokenizer, config.max_seq_len)
    device = resolve_device(config.device, training=True)
    dtype = resolve_dtype(config.dtype, device, training=True)
    model.to(device)
    reference_model = None
    if config.reference == "precomputed":
        dataset.reference_logps = compute_reference_logps(
            model, dataset, config.batch_size, config.logps == "mean", device, dtype)
    else:
        reference_model = frozen_copy(model)
    loss_fn = make_dpo_loss(config, reference_model)
    return train(config, model, dataset, collate_dpo, loss_fn, tokenizer=tokenizer, callbacks=callbacks)


def main(argv=None):
    config = parse_config(DPOConfig, argv)
    result = run(config)
    last = result.records[-1] if result.records else {}
    summary = ", ".join(f"{k} {last[k]:.4f}" for k in ("loss", "reward_margin", "preference_accuracy") if k in last)
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, one summary
        print(f"DPO done: {result.steps} steps, {summary}" + (f"; saved to {result.out_dir}" if result.out_dir else ""))
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.train.dpo", main))
