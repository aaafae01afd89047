"""Pretraining: next-token prediction on plain text, `[bos] + text + [eos]` per document.

With no arguments it trains the book's chapter model (preset `book`, ~1M parameters) on the
synthetic corpus in a few minutes on 2 CPU cores — the same run `minimind.zoo.pretrained()`
caches::

    python -m minimind.train.pretrain

Upstream MiniMind2-Small's setup (25.8M parameters, MiniMind2's tokenizer, `pretrain_hq.jsonl`)
on one GPU, then on 8 GPUs of one node, then on 2 nodes (run the same command on each node,
with its own --node_rank)::

    python -m minimind.train.pretrain --preset minimind2-small --tokenizer path/to/minimind2_tokenizer \\
        --data_path pretrain_hq.jsonl --max_seq_len 340 --batch_size 32 --grad_accum 8 --lr 5e-4 \\
        --max_steps 0 --epochs 1 --warmup_steps 100 --packing false --out_dir out/pretrain_512
    torchrun --standalone --nproc_per_node 8 -m minimind.train.pretrain ...same flags, --grad_accum 1
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m minimind.train.pretrain ...

Packing is the default (every position trains); `--packing false` pads one document per
example as upstream does. Chapter 3 measures the difference.
"""
from __future__ import annotations

from dataclasses import dataclass

from minimind.train.engine import (
    TrainConfig, TrainResult, build_model, causal_lm_loss, check_vocabulary, load_tokenizer, option,
    parse_config, train,
)


@dataclass
class PretrainConfig(TrainConfig):
    """Pretrain a MiniMind model on plain text (jsonl rows {"text": ...})."""

    out_dir: str = option("out/pretrain", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(128, "tokens per training sequence")
    packing: bool = option(True, "pack documents into full chunks (false: one padded document per example, as upstream)")
    max_steps: int = option(1200, "optimizer steps to run (0: as many as --epochs take)")
    batch_size: int = option(16, "sequences per micro-batch, per process")
    lr: float = option(3e-3, "peak learning rate")
    warmup_steps: int = option(30, "linear warm-up steps (cosine schedule)")
    log_interval: int = option(20, "log a metrics record every N optimizer steps")


def default_data_path() -> str:
    from minimind.data.synthetic import dataset_path

    return str(dataset_path("pretrain", "train"))


def run(config: PretrainConfig, callbacks=()) -> TrainResult:
    """Build the tokenizer, dataset and model that `config` names, and train."""
    from minimind.datasets import PretrainDataset, collate_causal_lm

    tokenizer = load_tokenizer(config)
    dataset = PretrainDataset(config.data_path or default_data_path(), tokenizer, config.max_seq_len,
                              packing=config.packing, progress=config.progress)
    model = build_model(config)
    check_vocabulary(tokenizer, model)
    return train(config, model, dataset, collate_causal_lm, causal_lm_loss, tokenizer=tokenizer, callbacks=callbacks)


def main(argv=None) -> int:
    config = parse_config(PretrainConfig, argv)
    result = run(config)
    if config.progress and (result.out_dir is not None):
        print(f"final loss {result.final_loss:.4f} after {result.steps} steps; saved to {result.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
