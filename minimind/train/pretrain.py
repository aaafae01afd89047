"""Pretraining: next-token prediction on plain text, `[bos] + text + [eos]` per document.

With no arguments it trains the book's chapter model (preset `book`, ~1M parameters) on the
synthetic corpus in a few minutes on 2 CPU cores — the same run the zoo caches as "pretrained"
(with no `--tokenizer` it trains the book's tokenizer first, in a second)::

    python -m minimind.train.pretrain

With an upstream preset (`minimind2-small`, `minimind2`, `minimind2-moe`, `minimind3`) the
defaults become upstream's hyper-parameters (`UPSTREAM_PRETRAIN`: 340-token padded documents,
32 x 8 sequences per step, lr 5e-4, one epoch); options given on the command line still win.
MiniMind2-Small (25.8M parameters) with MiniMind2's tokenizer on `pretrain_hq.jsonl`, on one
GPU, on 8 GPUs of one node (`--batch_size` is per process), and on 2 nodes (the same command on
each, with its own --node_rank)::

    python -m minimind.train.pretrain --preset minimind2-small --tokenizer path/to/minimind2_tokenizer \\
        --data_path pretrain_hq.jsonl --out_dir out/pretrain_512
    torchrun --standalone --nproc_per_node 8 -m minimind.train.pretrain --preset minimind2-small \\
        --tokenizer path/to/minimind2_tokenizer --data_path pretrain_hq.jsonl --grad_accum 1 --out_dir out/pretrain_512
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:29500 -m minimind.train.pretrain ...same flags...

Packing is the default (every position trains); `--packing false` pads one document per
example as upstream does. Chapter 4 measures the difference.
"""
from __future__ import annotations

from dataclasses import dataclass

from minimind.train.config import TrainConfig, option, parse_config
from minimind.train.loop import TrainResult, train
from minimind.train.stage import build_model, causal_lm_loss, check_vocabulary, load_tokenizer


@dataclass
class PretrainConfig(TrainConfig):
    """Pretrain a MiniMind model on plain text (jsonl rows {"text": ...})."""

    out_dir: str = option("out/pretrain", "where weights, metrics and the resume file go (empty: save nothing)")
    max_seq_len: int = option(128, "tokens per training sequence")
    packing: bool = option(True, "pack documents into full chunks (false: one padded document per example, as upstream)")
    max_steps: int = option(4000, "optimizer steps to run (0: as many as --epochs take)")
    batch_size: int = option(8, "sequences per micro-batch, per process")
    lr: float = option(3e-3, "peak learning rate")
    warmup_steps: int = option(30, "linear warm-up steps (cosine schedule)")
    log_interval: int = option(20, "log a metrics record every N optimizer steps")

    @classmethod
    def preset_defaults(cls, preset: str) -> dict:
        # upstream MiniMind2's pretraining hyper-parameters for its own model sizes
        return UPSTREAM_PRETRAIN if preset.startswith("minimind") else {}


# Upstream's train_pretrain.py settings: 1 epoch of 340-token padded documents, 32 x 8
# sequences per optimizer step, peak lr 5e-4 (decayed to a tenth). The engine keeps its
# warm-up and no-decay groups (pass --schedule upstream --decay_norms_and_embeddings true
# --weight_decay 0.01 --beta2 0.999 for upstream's optimizer exactly).
UPSTREAM_PRETRAIN = dict(max_seq_len=340, batch_size=32, grad_accum=8, lr=5e-4, epochs=1, max_steps=0,
                         warmup_steps=100, packing=False, log_interval=100, save_interval=1000)


def default_data_path() -> str:
    from minimind.data.synthetic import dataset_path

    return str(dataset_path("pretrain", "train"))


def run(config: PretrainConfig, *, model=None, tokenizer=None, callbacks=()) -> TrainResult:
    """Build the tokenizer, dataset and model that `config` names (or take the given ones), and train."""
    from minimind.data.datasets import PretrainDataset, collate_causal_lm

    if tokenizer is None:
        tokenizer = load_tokenizer(config)
    dataset = PretrainDataset(config.data_path or default_data_path(), tokenizer, config.max_seq_len,
                              packing=config.packing, progress=config.progress)
    if model is None:
        model = build_model(config)
    check_vocabulary(tokenizer, model)
    return train(config, model, dataset, collate_causal_lm, causal_lm_loss, tokenizer=tokenizer, callbacks=callbacks)


def main(argv=None) -> int:
    config = parse_config(PretrainConfig, argv, prog="python -m minimind.train.pretrain")
    result = run(config)
    if config.progress and (result.out_dir is not None):
        print(f"final loss {result.final_loss:.4f} after {result.steps} steps; saved to {result.out_dir}")
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.train.pretrain", main))
