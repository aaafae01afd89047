"""DDP on CPU: `torchrun --nproc_per_node 2` (gloo) follows the same loss trajectory as one process
with the same global batch, and only rank 0 writes — for pretraining, DPO (with its precomputed
reference log-probs) and LoRA (adapter weights only)."""
import math
import os
import random
import subprocess
import sys

import pytest
import torch

from minimind.checkpoint import load_model
from minimind.train import read_metrics
from minimind.train.state import RESUME_FILE, load_resume_state
from train_helpers import CITIES, JOBS, NAMES, TINY_OVERRIDES, make_tokenizer, pretrain_rows, write_jsonl

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 6


def one_process(args, out):
    done = subprocess.run([sys.executable, *args, "--out_dir", str(out)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def two_processes(args, out):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args, "--out_dir", str(out)], capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def two_processes_in_own_folders(args, root):
    """torchrun with each rank started in its own empty folder root/rank0, root/rank1 and a relative
    `--out_dir out`: whatever appears in rank1/ is something rank 1 wrote. Returns (run, rank 0's out)."""
    for rank in (0, 1):
        (root / f"rank{rank}").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--no-python",
         "sh", "-c", 'cd "$1/rank$RANK" && shift && exec "$@"', "sh", str(root),
         sys.executable, *args, "--out_dir", "out"],
        capture_output=True, text=True, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, root / "rank0" / "out"


def assert_only_rank_zero_wrote(root, done, summary):
    assert list((root / "rank1").iterdir()) == []
    out = root / "rank0" / "out"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, STEPS + 1))  # one writer
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    state = load_resume_state(out / RESUME_FILE)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert done.stdout.count(summary) == 1


def assert_same_trajectory(single, ddp, keys=("loss",), packed=False):
    assert [r["step"] for r in ddp] == [r["step"] for r in single] == list(range(1, STEPS + 1))
    if packed:  # padded batches count their padding, which depends on how the batch is split
        assert [r["tokens"] for r in ddp] == [r["tokens"] for r in single]  # global batch counted over ranks
    for key in keys:
        assert [r[key] for r in ddp] == pytest.approx([r[key] for r in single], rel=1e-4, abs=1e-6), key
    assert ddp[-1]["loss"] < ddp[0]["loss"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def tokenizer_dir(root):
    return make_tokenizer(root / "tok")


# ---------------------------------------------------------------------------------------------
# Pretraining


def pretrain_command(tokenizer_dir, data, batch_size):
    return ["-m", "minimind.train.pretrain", "--tokenizer", str(tokenizer_dir), "--data_path", str(data),
            "--preset", "tiny", "--model_overrides", TINY_OVERRIDES, "--max_seq_len", "32",
            "--batch_size", str(batch_size), "--max_steps", str(STEPS), "--warmup_steps", "2", "--log_interval", "1",
            "--device", "cpu", "--progress", "false"]


@pytest.fixture(scope="module")
def runs(root, tokenizer_dir):
    data = write_jsonl(root / "pretrain.jsonl", pretrain_rows(80))
    one_process(pretrain_command(tokenizer_dir, data, 8), root / "single")
    two_processes(pretrain_command(tokenizer_dir, data, 4), root / "ddp")
    return root


def test_two_processes_follow_the_single_process_loss_trajectory(runs):
    single = read_metrics(runs / "single" / "metrics.jsonl")
    ddp = read_metrics(runs / "ddp" / "metrics.jsonl")
    assert_same_trajectory(single, ddp, packed=True)
    for a, b in zip(load_model(runs / "single").parameters(), load_model(runs / "ddp").parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5)  # one lr-sized step is ~3e-3


def test_rank_zero_saves_one_checkpoint_with_every_ranks_rng(runs):
    state = load_resume_state(runs / "ddp" / RESUME_FILE)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # seeded per rank
    leftovers = [p.name for p in (runs / "ddp").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------
# DPO and LoRA start from a saved tiny model (with its tokenizer, so --init_from is all they need)


@pytest.fixture(scope="module")
def base(root, tokenizer_dir):
    from minimind.checkpoint import save_model
    from minimind.config import get_config
    from minimind.model import MiniMind
    from minimind.tokenizer import MiniMindTokenizer

    torch.manual_seed(0)
    folder = save_model(MiniMind(get_config("tiny", vocab_size=384)), root / "base")
    MiniMindTokenizer.from_pretrained(tokenizer_dir).save(folder)
    return folder


def fact(name, city):
    return f"{name} lives in {city}."


def assert_replies_have_one_length(tokenizer_dir, replies):
    """Every supervised reply has the same number of tokens. The loss terms that are token means
    (SFT cross-entropy; DPO's --sft_weight term) are averaged per rank and then over ranks, which
    equals one process's mean over the whole batch only when every rank supervises as many tokens."""
    from minimind.tokenizer import MiniMindTokenizer

    tokenizer = MiniMindTokenizer.from_pretrained(tokenizer_dir)
    assert len({len(tokenizer.encode(reply)) for reply in replies}) == 1


def preference_pairs(n, seed=0):
    """'Where does X live?': chosen states the fact (always 6 tokens); rejected states a wrong city and
    0-12 more words, so the pairs' reference log-probs differ by up to ~70 nats."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        wrong = rng.choice([c for c in CITIES if c != city])
        extra = " ".join(rng.choice(JOBS + CITIES) for _ in range(rng.randint(0, 12)))  # 0-12 words more
        prompt = [{"role": "user", "content": f"Where does {name} live?"}]
        rows.append({"chosen": prompt + [{"role": "assistant", "content": fact(name, city)}],
                     "rejected": prompt + [{"role": "assistant", "content": f"{fact(name, wrong)} {extra}".strip()}]})
    return rows


def dpo_command(base, data, batch_size):
    return ["-m", "minimind.train.dpo", "--init_from", str(base), "--data_path", str(data), "--max_seq_len", "96",
            "--batch_size", str(batch_size), "--max_steps", str(STEPS), "--warmup_steps", "1", "--lr", "2e-3",
            "--log_interval", "1", "--device", "cpu", "--progress", "false"]


@pytest.fixture(scope="module")
def dpo_runs(root, tokenizer_dir, base):
    rows = preference_pairs(32)  # 4 steps of 8 pairs per epoch: the 6 steps cross into a second epoch
    assert_replies_have_one_length(tokenizer_dir, [r["chosen"][-1]["content"] for r in rows])
    data = write_jsonl(root / "pairs.jsonl", rows)
    one_process(dpo_command(base, data, 8), root / "dpo_single")
    done, _ = two_processes_in_own_folders(dpo_command(base, data, 4), root / "dpo_ddp")
    return root, done, data


def test_dpo_two_processes_follow_the_single_process_trajectory(dpo_runs, base):
    from minimind.tokenizer import MiniMindTokenizer
    from minimind.data.datasets import DPODataset
    from minimind.train.dpo import compute_reference_logps

    root, _, data = dpo_runs
    single = read_metrics(root / "dpo_single" / "metrics.jsonl")
    ddp = read_metrics(root / "dpo_ddp" / "rank0" / "out" / "metrics.jsonl")
    # Why this catches a rank using reference log-probs of samples that are not its own (the
    # default --reference precomputed): at step 1 the policy *is* the reference, so with the right
    # reference every pair's margin is 0 and dpo_loss is exactly ln 2. A pair i scored against
    # pair j's reference gets margin β·(Δ_i − Δ_j), Δ = log π_ref(chosen) − log π_ref(rejected),
    # and these Δ differ across pairs by many nats (checked below), so the step-1 loss leaves ln 2
    # and the step losses leave the single process's (where every index finds its own row). A
    # permutation within the global batch cancels in the mean rewards but not in the loss, since
    # −log σ is convex; the later steps and the final weights differ as well.
    # Demonstrated by breaking dpo.py on purpose: rank 1's table shifted by one row → step-1 dpo_loss
    # 1.46 (and the step losses off the single run's by up to 0.8); the two ranks' rows swapped →
    # 1.81; every process's table shifted by one row (one process too, so the runs agree) → 1.68.
    pairs = DPODataset(data, MiniMindTokenizer.from_pretrained(base), max_seq_len=96)
    table = compute_reference_logps(load_model(base), pairs, batch_size=8)
    gaps = table[:, 0] - table[:, 1]
    assert gaps.std() > 10  # nats (0 to ~70): a misaligned pair's margin is typically β·10 = 1 or more
    for run in (single, ddp):
        assert run[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert run[0]["chosen_reward"] == pytest.approx(0, abs=1e-5)
        assert run[0]["rejected_reward"] == pytest.approx(0, abs=1e-5)
    assert_same_trajectory(single, ddp, keys=("loss", "dpo_loss", "sft_loss", "reward_margin", "chosen_logps",
                                              "rejected_logps", "grad_norm"))
    assert ddp[-1]["reward_margin"] > 0.05  # the preference is being learnt
    start = load_model(base).state_dict()
    single_model, ddp_model = load_model(root / "dpo_single"), load_model(root / "dpo_ddp" / "rank0" / "out")
    for (name, a), b in zip(single_model.state_dict().items(), ddp_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5, msg=name)  # one lr-sized step is ~2e-3
    assert max((p - start[n]).abs().max() for n, p in single_model.state_dict().items()) > 5e-3  # it moved


def test_dpo_only_rank_zero_writes(dpo_runs):
    root, done, _ = dpo_runs
    assert_only_rank_zero_wrote(root / "dpo_ddp", done, "DPO done")
    out = root / "dpo_ddp" / "rank0" / "out"
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


# ---------------------------------------------------------------------------------------------
# LoRA


def identity_rows(n, seed=0):
    """SFT conversations whose replies all have 6 tokens (see assert_replies_have_one_length);
    the prompts differ in length."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        conversation = [{"role": "user", "content": f"Where does {name} live?"},
                        {"role": "assistant", "content": fact(name, city)}]
        if i % 3 == 0:
            conversation.insert(0, {"role": "system", "content": "Answer briefly."})
        rows.append({"conversations": conversation})
    return rows


def lora_command(base, data, batch_size):
    # --lora_dropout 0: dropout is seeded per rank (as on separate GPUs), so masks could not match
    return ["-m", "minimind.train.lora", "--init_from", str(base), "--data_path", str(data), "--max_seq_len", "64",
            "--batch_size", str(batch_size), "--max_steps", str(STEPS), "--warmup_steps", "1", "--lr", "5e-3",
            "--rank", "4", "--alpha", "8", "--lora_dropout", "0", "--lora_name", "ddp", "--log_interval", "1",
            "--device", "cpu", "--progress", "false"]


@pytest.fixture(scope="module")
def lora_runs(root, tokenizer_dir, base):
    rows = identity_rows(32)
    assert_replies_have_one_length(tokenizer_dir, [r["conversations"][-1]["content"] for r in rows])
    data = write_jsonl(root / "identity.jsonl", rows)
    one_process(lora_command(base, data, 8), root / "lora_single")
    done, _ = two_processes_in_own_folders(lora_command(base, data, 4), root / "lora_ddp")
    return root, done


def test_lora_two_processes_follow_the_single_process_trajectory(lora_runs):
    from safetensors.torch import load_file

    root, _ = lora_runs
    single = read_metrics(root / "lora_single" / "metrics.jsonl")
    ddp = read_metrics(root / "lora_ddp" / "rank0" / "out" / "metrics.jsonl")
    assert_same_trajectory(single, ddp, keys=("loss", "grad_norm"))
    single_adapter = load_file(root / "lora_single" / "adapter.safetensors")
    ddp_adapter = load_file(root / "lora_ddp" / "rank0" / "out" / "adapter.safetensors")
    assert sorted(ddp_adapter) == sorted(single_adapter)
    for name, tensor in single_adapter.items():
        torch.testing.assert_close(ddp_adapter[name], tensor, rtol=1e-4, atol=5e-5, msg=name)
    assert max(t.abs().max() for n, t in single_adapter.items() if n.endswith("lora_B")) > 5e-3  # B left 0


def test_lora_only_rank_zero_writes_the_adapter_alone(lora_runs):
    root, done = lora_runs
    assert_only_rank_zero_wrote(root / "lora_ddp", done, "LoRA done")
    out = root / "lora_ddp" / "rank0" / "out"
    assert (out / "adapter.safetensors").exists() and (out / "adapter_config.json").exists()
    assert not (out / "model.safetensors").exists()
