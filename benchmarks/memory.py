"""Peak resident memory of a few training steps, one contender per fresh process:
`python -m benchmarks.memory {ours,transformers}[+ckpt] PRESET BATCH SEQ` prints {"peak_rss_mb": …}
(`+ckpt`: with that model's activation checkpointing)."""
import json
import resource
import sys

import torch

from minimind.config import get_config
from minimind.model import MiniMind


def main(argv):
    kind, preset, batch_size, seq_len = argv[0], argv[1], int(argv[2]), int(argv[3])
    kind, _, variant = kind.partition("+")
    if kind not in ("ours", "transformers") or variant not in ("", "ckpt"):
        raise SystemExit(f"unknown contender {argv[0]!r}: expected ours, transformers, ours+ckpt or transformers+ckpt")
    torch.manual_seed(0)
    config = get_config(preset)
    if kind == "ours":
        model = MiniMind(config)
    else:  # built directly from the equivalent transformers config: memory does not depend on values
        from transformers import AutoModelForCausalLM

        from minimind.formats import transformers_config

        model = AutoModelForCausalLM.from_config(transformers_config(config))
    from benchmarks.train_step import make_step

    batch = torch.randint(0, config.vocab_size, (batch_size, seq_len))
    step = make_step(model, batch, hf=kind != "ours", checkpointing=variant == "ckpt")
    for _ in range(3):
        step()
    print(json.dumps({"peak_rss_mb": peak_rss_kb() / 1024}))


def peak_rss_kb() -> int:
    """This process's peak resident set size in KB. Linux: VmHWM, the high-water mark of this
    process image. Not getrusage's ru_maxrss, which Linux carries over from the parent across
    fork + exec: a child of a big benchmark process would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KB elsewhere


if __name__ == "__main__":
    main(sys.argv[1:])
