"""Where a training run stands, and the files that let another process continue it bit for bit.

`TrainState` is the run's position (optimizer steps, epoch, micro-batches of the epoch consumed,
tokens seen). `Resume` is everything `resume.pt` holds: that position, the fp32 weights, the
optimizer and grad-scaler states, every rank's RNG states, the batch layout and the config. The
same class writes the file and reads it back, so the two cannot drift apart; it is written
atomically and read with `torch.load(weights_only=True)` (tensors and plain containers only).

An `out_dir` holds one run: `model.safetensors` + `config.json` (or the stage's own weights),
the tokenizer, `train_config.json`, `metrics.jsonl` and `resume.pt`. `existing_run_problem`
says why a new run must not write into a folder that holds another.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

RESUME_FILE = "resume.pt"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
RESUME_FORMAT = "minimind-resume-1"
_LAYOUT = ("batch_size", "grad_accum", "world_size")  # what must not change for the data order to continue


@dataclass
class TrainState:
    """The position of a run: what the loop advances and a resumed run starts from."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch the next micro-batch comes from
    batch_in_epoch: int = 0  # micro-batches of that epoch already consumed
    tokens: int = 0  # tokens fed to the model so far, every rank counted


@dataclass
class Resume:
    """Everything needed to continue a run exactly: the contents of `resume.pt`."""

    state: TrainState
    model: dict  # fp32 weights on the CPU (upstream MiniMind saves fp16 copies, losing precision on resume)
    optimizer: dict
    scaler: Optional[dict]  # None unless fp16 training uses a grad scaler
    rng: list  # every rank's `minimind.runtime.rng_state()`, in rank order
    batch_size: int
    grad_accum: int
    world_size: int
    config: dict

    def to_dict(self) -> dict:
        return {"format": RESUME_FORMAT, "model": self.model, "optimizer": self.optimizer, "scaler": self.scaler,
                **dataclasses.asdict(self.state), "batch_size": self.batch_size, "grad_accum": self.grad_accum,
                "world_size": self.world_size, "rng": self.rng, "config": self.config}

    @classmethod
    def from_dict(cls, values: dict) -> "Resume":
        state = TrainState(**{f.name: values[f.name] for f in dataclasses.fields(TrainState)})
        return cls(state, values["model"], values["optimizer"], values["scaler"], values["rng"],
                   **{key: values[key] for key in _LAYOUT}, config=values["config"])

    def save(self, path: Path) -> None:
        save_resume_state(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "Resume":
        return cls.from_dict(load_resume_state(path))

    def check_layout(self, path: Path, **current: int) -> None:
        """Refuse to continue under another batch layout: the data order would not continue."""
        for key in _LAYOUT:
            if getattr(self, key) != current[key]:
                raise ValueError(f"{path}: saved with {key}={getattr(self, key)}, now {current[key]}; "
                                 "resume needs the same batch layout to continue the same data order")


def save_resume_state(path: Path, state: dict) -> None:
    """Write a resume file atomically: a crash mid-write leaves the previous one intact."""
    from minimind.files import atomic_write

    def write(temp):
        with open(temp, "wb") as f:  # through a Python file, so a full disk surfaces as an OSError
            torch.save(state, f)

    atomic_write(path, write)


def load_resume_state(path: Path) -> dict:
    """Read a resume file with `weights_only=True` (tensors and plain containers only)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load fails in many ways on a damaged file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: not a readable resume file ({reason}); delete it to start afresh, "
                         "or restore it") from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ValueError(f"{path}: not a MiniMind resume file (expected format {RESUME_FORMAT!r})")
    return state


def existing_run_problem(out_dir: Optional[Path], resume: bool, overwrite: bool) -> Optional[str]:
    """Why a run must not write into `out_dir` (it holds a run that `resume` does not continue and
    `overwrite` does not replace), or None."""
    if out_dir is None or overwrite or (resume and (out_dir / RESUME_FILE).exists()):
        return None
    found = [name for name in (TRAIN_CONFIG_FILE, RESUME_FILE, METRICS_FILE) if (out_dir / name).exists()]
    if not found:
        return None
    return (f"{out_dir} already holds a training run ({', '.join(found)}): pass --resume to continue it "
            f"(from its {RESUME_FILE}), --overwrite to replace it, or another --out_dir")


def write_train_config(out_dir: Path, config: dict) -> None:
    """`train_config.json`: the options the run was started with."""
    from minimind.files import atomic_save_bytes

    atomic_save_bytes(out_dir / TRAIN_CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
