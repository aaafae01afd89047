"""Where and how a run computes: the device, the dtype, the seeds and RNG states, the process group.

Training and inference decide these here, with one rule table:

==========  ==========================================  =========================================
`auto`      training (`minimind.train`)                 inference (chat, serve, eval, export)
==========  ==========================================  =========================================
device      this process's CUDA GPU, else the CPU       this process's CUDA GPU, else Apple's
                                                        MPS, else the CPU
dtype       CUDA: bf16 autocast (fp16 + grad scaler     CUDA: bf16 weights (fp16 without bf16);
            without bf16); elsewhere fp32               MPS: fp16; CPU: fp32
==========  ==========================================  =========================================

Training never picks MPS by itself (`--device mps` asks for it): the book's figures and their
bands are measured on CPUs, and DDP's gloo backend does not take MPS tensors. Nothing ever runs
in fp16 on a CPU (upstream MiniMind's scripts default to it: slow on a CPU, and precision lost for nothing).
"""
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

REPLICA_STRIDE = 1000
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------
# Seeds and random states


def replica_seed(seed: int) -> int:
    """`seed`, or under ``MINIMIND_SEED=s`` the seed of the s-th replicate run: ``seed + 1000·s``.

    The book's figures are measured under several replicates (scripts/measure_bands.py) to learn
    how far they move when nothing but the random draws changes; unset, every run keeps its own
    seed and the stored outputs reproduce."""
    return seed + REPLICA_STRIDE * int(os.environ.get("MINIMIND_SEED", "0"))


def cpu_threads() -> int:
    """The CPU threads a chapter and the zoo's builds compute with: every core, or ``MINIMIND_THREADS``
    (`make test` sets 1, since it runs one chapter per core)."""
    return int(os.environ.get("MINIMIND_THREADS", "0")) or (os.cpu_count() or 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random state this process draws from (torch, Python, NumPy, CUDA), as tensors and plain
    containers (`torch.load(weights_only=True)` reads them back)."""
    import numpy as np

    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state()` captured."""
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Devices and dtypes


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(name: str = "auto", training: bool = False) -> torch.device:
    """The device `--device name` asks for (see the table above for "auto"); "cuda" is this
    process's GPU (LOCAL_RANK under torchrun). ValueError naming the option when the name is not a
    device or this machine does not have it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_rank())
        if not training and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", _local_rank())
    return device


def default_dtype(device, training: bool = False) -> torch.dtype:
    """The dtype "auto" means on `device` (the table above)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps" and not training:
        return torch.float16
    return torch.float32


def resolve_dtype(name: str, device, training: bool = False) -> torch.dtype:
    """`--dtype name` on `device`: "auto" → `default_dtype`, else one of DTYPES' names. For
    training it is the autocast dtype (fp32: no autocast), and fp16 needs CUDA (its grad scaler)."""
    if name == "auto":
        return default_dtype(device, training)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if training and dtype == torch.float16 and torch.device(device).type != "cuda":
        raise ValueError("--dtype fp16 needs CUDA; on CPU use fp32 or bf16")
    return dtype


def autocast_context(device: torch.device, dtype: torch.dtype):
    """Mixed precision for a training forward pass; weights and optimizer state stay fp32."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def move_to_device(batch, device: torch.device):
    """Tensors (inside dicts, lists, tuples) moved to `device`; everything else unchanged."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class Distributed:
    """Where this process stands in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False  # init_distributed created the process group; close() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def close(self) -> None:
        if self.created_group:
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> Distributed:
    """Join the torchrun job if there is one: NCCL for CUDA devices, gloo for CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return Distributed()
    created = False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    return Distributed(dist.get_rank(), dist.get_world_size(), _local_rank(), created)
