"""DDP on CPU: `torchrun --nproc_per_node 2` (gloo) follows the same loss trajectory as one process
with the same global batch, and only rank 0 writes the checkpoint."""
import os
import subprocess
import sys

import pytest
import torch

from minimind.checkpoint import load_model
from minimind.train import read_metrics
from minimind.train.engine import RESUME_FILE, load_resume_state
from train_helpers import TINY_OVERRIDES, make_tokenizer, pretrain_rows, write_jsonl


def pretrain_command(tokenizer_dir, data, out, batch_size):
    return ["-m", "minimind.train.pretrain", "--tokenizer", str(tokenizer_dir), "--data_path", str(data),
            "--preset", "tiny", "--model_overrides", TINY_OVERRIDES, "--max_seq_len", "32",
            "--batch_size", str(batch_size), "--max_steps", "6", "--warmup_steps", "2", "--log_interval", "1",
            "--device", "cpu", "--out_dir", str(out), "--progress", "false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    tokenizer_dir = make_tokenizer(root / "tok")
    data = write_jsonl(root / "pretrain.jsonl", pretrain_rows(80))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, *pretrain_command(tokenizer_dir, data, root / "single", 8)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr
    distributed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *pretrain_command(tokenizer_dir, data, root / "ddp", 4)],
        capture_output=True, text=True, timeout=600, env=env)
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    return root


def test_two_processes_follow_the_single_process_loss_trajectory(runs):
    single = read_metrics(runs / "single" / "metrics.jsonl")
    ddp = read_metrics(runs / "ddp" / "metrics.jsonl")
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == list(range(1, 7))
    assert [r["tokens"] for r in ddp] == [r["tokens"] for r in single]  # global batch counted over ranks
    assert [r["loss"] for r in ddp] == pytest.approx([r["loss"] for r in single], rel=1e-4)
    assert ddp[-1]["loss"] < ddp[0]["loss"]
    for a, b in zip(load_model(runs / "single").parameters(), load_model(runs / "ddp").parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5)  # one lr-sized step is ~3e-3


def test_rank_zero_saves_one_checkpoint_with_every_ranks_rng(runs):
    state = load_resume_state(runs / "ddp" / RESUME_FILE)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # seeded per rank
    leftovers = [p.name for p in (runs / "ddp").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
