"""Supervised fine-tuning: chat conversations, loss only on the assistant's replies.

Starts from a pretrained checkpoint (`--init_from`, default `out/pretrain`, what
`python -m minimind.train.pretrain` writes) and trains on `{"conversations": [...]}` rows
rendered with the chat template; the loss mask comes from the same rendering
(`MiniMindTokenizer.render_conversation`), so every assistant turn of a multi-turn
conversation is supervised and nothing else is. With no arguments it runs the book's SFT on
the synthetic Q&As (what the zoo caches as "sft")::

    python -m minimind.train.pretrain && python -m minimind.train.sft

Upstream MiniMind2-Small's SFT (`sft_mini_512.jsonl`)::

    torchrun --standalone --nproc_per_node 8 -m minimind.train.sft --init_from out/pretrain_512 \\
        --data_path sft_mini_512.jsonl --max_seq_len 512 --batch_size 16 --lr 1e-5 \\
        --max_steps 0 --epochs 2 --out_dir out/sft_512
"""
from __future__ import annotations

from dataclasses import dataclass

from minimind.train.config import TrainConfig, option, parse_config
from minimind.train.loop import TrainResult, train
from minimind.train.stage import build_model, check_vocabulary, load_tokenizer, supervised_lm_loss


@dataclass
class SFTConfig(TrainConfig):
    """Fine-tune a pretrained MiniMind on chat conversations (jsonl rows {"conversations": [...]})."""

    init_from: str = option("out/pretrain", "checkpoint directory to start from (the pretrained model)")
    out_dir: str = option("out/sft", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(192, "tokens per conversation (longer ones are cut; a cut reply stays supervised)")
    supervise_all: bool = option(False, "train on every token, prompts included (the ablation of chapter 5)")
    max_steps: int = option(250, "optimizer steps to run (0: as many as --epochs take)")
    batch_size: int = option(32, "conversations per micro-batch, per process")
    lr: float = option(7e-4, "peak learning rate")
    warmup_steps: int = option(20, "linear warm-up steps (cosine schedule)")
    log_interval: int = option(10, "log a metrics record every N optimizer steps")


def default_data_path() -> str:
    from minimind.data.synthetic import dataset_path

    return str(dataset_path("sft", "train"))


def run(config: SFTConfig, *, model=None, tokenizer=None, callbacks=()) -> TrainResult:
    """Build the tokenizer, dataset and model that `config` names (or take the given ones), and fine-tune."""
    from minimind.data.datasets import SFTDataset, collate_causal_lm

    if model is None and not config.init_from:
        raise ValueError("SFT starts from a pretrained model: pass --init_from DIR")
    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    dataset = SFTDataset(config.data_path or default_data_path(), tokenizer, config.max_seq_len,
                         supervise_all=config.supervise_all)
    if model is None:
        model = build_model(config)
    check_vocabulary(tokenizer, model)
    return train(config, model, dataset, collate_causal_lm, supervised_lm_loss, tokenizer=tokenizer, callbacks=callbacks)


def main(argv=None) -> int:
    config = parse_config(SFTConfig, argv, prog="python -m minimind.train.sft")
    result = run(config)
    if config.progress and result.out_dir is not None:
        print(f"final loss {result.final_loss:.4f} after {result.steps} steps; saved to {result.out_dir}")
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.train.sft", main))
