"""Training: one shared engine (`minimind.train.engine`) and one thin module per stage.

Each stage runs as `python -m minimind.train.<stage>` (or `minimind train <stage>`), alone or
under `torchrun --nproc_per_node N`; `--help` lists every option with its default.
Stages: pretrain, sft (this package's own), dpo, lora, reason, distill.
"""
from minimind.train.engine import (
    NonFiniteLossError,
    StepInfo,
    TrainConfig,
    TrainResult,
    build_cli,
    build_model,
    causal_lm_loss,
    check_vocabulary,
    learning_rate_at,
    load_tokenizer,
    option,
    param_groups,
    parse_config,
    seed_everything,
    supervised_lm_loss,
    train,
)
from minimind.train.metrics import plot_metrics, read_metrics

__all__ = [
    "NonFiniteLossError", "StepInfo", "TrainConfig", "TrainResult", "build_cli", "build_model",
    "causal_lm_loss", "check_vocabulary", "learning_rate_at", "load_tokenizer", "option", "param_groups", "parse_config",
    "seed_everything", "supervised_lm_loss", "train", "plot_metrics", "read_metrics",
]
