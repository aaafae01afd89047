"""What every stage builds before it trains, from its config: the tokenizer, the model (fresh or
from a checkpoint) and the check that they fit; and the two language-model losses the stages
share (`loss_fn(model, batch) -> (loss, metrics)`, see `minimind.train.loop`)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from minimind.losses import IGNORE_INDEX, next_token_targets, supervised_targets
from minimind.runtime import seed_everything
from minimind.train.config import TrainConfig, parse_overrides


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
    """`config.tokenizer` if given, else the tokenizer saved with `init_from`, else the book's
    (`minimind.train.tokenizer.book_tokenizer`: trained afresh on the synthetic corpus, in a second)."""
    from minimind.tokenizer import MiniMindTokenizer

    if config.tokenizer:
        return MiniMindTokenizer.from_pretrained(config.tokenizer)
    if config.init_from and (Path(config.init_from) / "tokenizer.json").exists():
        return MiniMindTokenizer.from_pretrained(config.init_from)
    from minimind.train.tokenizer import book_tokenizer

    return book_tokenizer()


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
