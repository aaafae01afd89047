"""LoRA fine-tuning: train a small named adapter on top of a frozen chat model.

    python -m minimind.train.lora                                   # identity adapter on out/sft (python -m minimind.train.sft)
    python -m minimind.train.lora --data_path lora_domain_train.jsonl --lora_name domain
    python -m minimind.train.lora --init_from out/sft --preset minimind2-small --targets q_proj,o_proj
    python -m minimind.train.lora --data_path tea.jsonl --trainable_tokens Oolong,Sencha   # + those words' rows
    python -m minimind.train.lora --data_path tea.jsonl --base_corpora pretrain.jsonl,sft.jsonl  # + every new token's row
    torchrun --nproc_per_node 2 -m minimind.train.lora …            # several processes, same options

The data is SFT-shaped (``{"conversations": [...]}``) and trained with the assistant-only loss.
Only the adapter's A and B matrices train; what is saved in ``--out_dir`` is the adapter alone
(``adapter.safetensors`` + ``adapter_config.json``, a few hundred kB) — load it onto the same
base model with :func:`minimind.lora.load_lora`, or merge it for export.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from torch import nn

from minimind.data.jsonl import DataError, read_jsonl
from minimind.lora import DEFAULT_TARGETS, apply_lora, save_lora
from minimind.train.config import TrainConfig, option, parse_config
from minimind.train.loop import TrainResult, train
from minimind.train.stage import build_model, load_tokenizer, supervised_lm_loss


@dataclass
class LoRAConfig(TrainConfig):
    """LoRA fine-tuning of a frozen model on SFT conversations (python -m minimind.train.lora)."""

    init_from: str = option("out/sft", "the base checkpoint the adapter is trained on (the chat model "
                            "`python -m minimind.train.sft` writes)")
    data_path: str = option("", "SFT-schema jsonl (empty: the book's synthetic identity set)")
    out_dir: str = option("out/lora", "where the adapter, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(128, "tokens per conversation (longer ones are truncated)")
    batch_size: int = option(16, "conversations per micro-batch")
    epochs: int = option(4, "passes over the data (ignored when --max_steps > 0)")
    lr: float = option(2e-3, "peak learning rate (adapters start at zero and need a larger one than full tuning)")
    warmup_steps: int = option(5, "linear warm-up steps")
    weight_decay: float = option(0.0, "AdamW weight decay on the adapter matrices")
    lora_name: str = option("identity", "the adapter's name (several can live on one model)")
    rank: int = option(16, "LoRA rank r: the update B·A has rank at most r")
    alpha: float = option(32.0, "LoRA alpha: the update is scaled by alpha / rank")
    lora_dropout: float = option(0.1, "dropout on the adapter's input (less damage to what the base model knows)")
    targets: str = option(",".join(DEFAULT_TARGETS), "comma-separated names of the linear layers to adapt")
    trainable_tokens: str = option("", "comma-separated words whose tokens' embedding rows (and a tied head's) "
                                   "train too, e.g. names the base model never saw (empty: none)")
    base_corpora: str = option("", "comma-separated jsonl files the base model was trained on (its pretraining "
                               "and SFT data): the embedding rows of every token of --data_path that none of "
                               "them holds train too, rows the base model never learnt (empty: none)")

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"--rank must be >= 1, got {self.rank}")
        if not self.target_names:
            raise ValueError("--targets names no layer")

    @property
    def target_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.targets.split(",") if name.strip())

    @property
    def trainable_words(self) -> tuple[str, ...]:
        return tuple(word.strip() for word in self.trainable_tokens.split(",") if word.strip())

    @property
    def base_corpus_paths(self) -> tuple[str, ...]:
        return tuple(path.strip() for path in self.base_corpora.split(",") if path.strip())


def word_token_ids(tokenizer, words) -> list[int]:
    """The token ids a word is written with, alone and after a space (byte-level BPE spells the two
    differently: "Sencha" and " Sencha"), for every word; sorted, each once."""
    ids = set()
    for word in words:
        for spelling in (word, " " + word):
            ids.update(tokenizer.encode(spelling))
    return sorted(ids)


def corpus_token_ids(tokenizer, path) -> set[int]:
    """Every token id the rows of a jsonl file are written with: a pretraining row's `text` as
    encoded, an SFT row's conversation as the chat template renders it for training."""
    ids: set[int] = set()
    for line, row in enumerate(read_jsonl(path), start=1):
        if isinstance(row.get("text"), str):
            ids.update(tokenizer.encode(row["text"]))
        elif isinstance(row.get("conversations"), list):
            ids.update(tokenizer.render_conversation(row["conversations"])[0])
        else:
            raise DataError(f"{path}:{line}: neither a 'text' nor a 'conversations' field")
    return ids


def new_token_ids(tokenizer, data_path, corpora) -> list[int]:
    """The tokens of `data_path` that no file of `corpora` holds, sorted. A base model trained on
    those corpora never read these tokens, so their embedding rows are still what initialisation
    and weight decay made them (and, with a tied head, what "never the next token" pushed them to)."""
    seen: set[int] = set()
    for corpus in corpora:
        seen |= corpus_token_ids(tokenizer, corpus)
    return sorted(corpus_token_ids(tokenizer, data_path) - seen)


def save_adapter_fn(name: str):
    """The engine's save_fn: write the adapter alone instead of the whole model."""

    def save(model: nn.Module, out_dir: Path) -> None:
        save_lora(model, out_dir, name=name)

    return save


def run(config: LoRAConfig, *, model: Optional[nn.Module] = None, tokenizer=None, callbacks=()) -> TrainResult:
    """Add adapter `--lora_name` to `model` (default: the checkpoint in `--init_from`) and train it."""
    from minimind.data.datasets import SFTDataset, collate_causal_lm

    if model is None and not config.init_from:
        raise ValueError("LoRA trains an adapter on a base model: pass --init_from DIR")
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    if model is None:
        model = build_model(config)
    data_path = config.data_path
    if not data_path:
        from minimind.data.synthetic import dataset_path

        data_path = dataset_path("lora_identity", "train")
    token_ids = set(word_token_ids(tokenizer, config.trainable_words))
    if config.base_corpus_paths:
        token_ids.update(new_token_ids(tokenizer, data_path, config.base_corpus_paths))
    apply_lora(model, config.rank, config.alpha, config.lora_dropout, config.target_names, config.lora_name,
               trainable_tokens=sorted(token_ids))
    dataset = SFTDataset(data_path, tokenizer, config.max_seq_len)
    return train(config, model, dataset, collate_causal_lm, supervised_lm_loss, tokenizer=tokenizer,
                 save_fn=save_adapter_fn(config.lora_name), callbacks=callbacks)


def main(argv=None):
    config = parse_config(LoRAConfig, argv)
    result = run(config)
    trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in result.model.parameters())
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun, one summary
        print(f"LoRA done: {result.steps} steps, final loss {result.final_loss:.4f}, "
              f"{trainable:,} of {total:,} parameters trained ({100 * trainable / total:.2f}%)"
              + (f"; adapter saved to {result.out_dir}" if result.out_dir else ""))
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.train.lora", main))
