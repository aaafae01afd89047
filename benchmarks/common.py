"""What every benchmark shares: contenders built from the same weights, alternating timed
repetitions with medians, the fp32 matmul peak, and peak memory measured in a child process."""
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from minimind.config import get_config
from minimind.model import MiniMind


def set_threads(threads: int | None = None) -> int:
    cores = threads or os.cpu_count() or 1
    torch.set_num_threads(cores)
    return cores


def build_pair(preset: str, seed: int = 0, vocab_size: int | None = None):
    """Our model and transformers' model holding exactly the same weights (fp32, CPU); vocab_size
    overrides the preset's."""
    from minimind.formats import to_transformers_model

    torch.manual_seed(seed)
    ours = MiniMind(get_config(preset, **({"vocab_size": vocab_size} if vocab_size else {})))
    theirs = to_transformers_model(ours)
    return ours, theirs


def alternate(contenders: dict, repeats: int, warmup: int = 1) -> dict:
    """Time each contender's callable `repeats` times, interleaved (A B A B …) so that a noisy
    machine affects both alike; returns the list of seconds per contender."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values) -> float:
    return statistics.median(values)


def matmul_peak_gflops(n: int = 1024, repeats: int = 20, dtype=torch.float32) -> float:
    """Best achieved GFLOP/s of an n×n fp32 matrix multiply on this machine, right now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def training_flops_per_token(config, seq_len: int) -> float:
    """Model FLOPs of one trained token (forward + backward = 3 × forward), PaLM's accounting:
    6 × (non-embedding matmul parameters + LM head) + 12 × layers × hidden × seq_len (attention)."""
    model = MiniMind(config) if not isinstance(config, MiniMind) else config
    cfg = model.config
    params = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    if cfg.tie_word_embeddings:
        params += cfg.vocab_size * cfg.hidden_size  # the tied head is still a matmul per token
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 6 * params + attention


def child_peak_rss_mb(args: list[str]) -> float:
    """Run `python -m benchmarks.memory ARGS` in a fresh process and return its peak RSS (MB)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", *args], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]])
