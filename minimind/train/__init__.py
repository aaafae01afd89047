"""Training: one shared engine and one thin module per stage.

The engine is four modules: `config` (a stage's options as a dataclass, and the command line
generated from it), `stage` (what a stage builds from its config: tokenizer, model, the
language-model losses), `loop` (`train()`: optimizer, schedule, accumulation, precision, DDP,
logging, checkpoints) and `state` (`TrainState` and the resume file, written and read by one
class); `metrics` is the JSONL record. The stages — `tokenizer`, `pretrain`, `sft`, `dpo`,
`lora`, `reason`, `distill`, `rl` (its own rollout loop; resume and torchrun too) — each run as `python -m minimind.train.<stage>` (or
`minimind train <stage>`), alone or under `torchrun --nproc_per_node N`; `--help` lists every
option with its default. Each has `run(config, *, model=None, tokenizer=None, callbacks=())`,
which trains on the paths the config names (`init_from`, `tokenizer`, `data_path`, `out_dir`):
stages know nothing of the zoo, which calls them with the paths of its artefacts.

A stage in ten lines::

    @dataclass
    class MyStageConfig(TrainConfig):
        beta: float = option(0.1, "strength of my extra term")
        lr: float = option(1e-4, "peak learning rate")           # a different default

    def my_loss(model, batch):                                   # -> (loss, metrics to log)
        out = model(batch["input_ids"], labels=batch["labels"])
        return out.loss + out.aux_loss, {"lm_loss": out.loss}

    def main(argv=None):
        config = parse_config(MyStageConfig, argv, prog="python -m minimind.train.mystage")
        tokenizer, model = load_tokenizer(config), build_model(config)
        dataset = SFTDataset(config.data_path, tokenizer, config.max_seq_len)
        return train(config, model, dataset, collate_causal_lm, my_loss, tokenizer=tokenizer)
"""
from minimind.train.config import TrainConfig, build_cli, option, parse_config, parse_overrides
from minimind.train.loop import NonFiniteLossError, StepInfo, TrainResult, learning_rate_at, param_groups, train
from minimind.train.metrics import plot_metrics, read_metrics
from minimind.train.stage import (build_model, causal_lm_loss, check_vocabulary, load_tokenizer,
                                  supervised_lm_loss)
from minimind.train.state import RESUME_FILE, Resume, TrainState, load_resume_state

__all__ = [
    "TrainConfig", "build_cli", "option", "parse_config", "parse_overrides",
    "NonFiniteLossError", "StepInfo", "TrainResult", "learning_rate_at", "param_groups", "train",
    "plot_metrics", "read_metrics",
    "build_model", "causal_lm_loss", "check_vocabulary", "load_tokenizer", "supervised_lm_loss",
    "RESUME_FILE", "Resume", "TrainState", "load_resume_state",
]
