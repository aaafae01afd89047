"""The training engine on tiny configs: CLI, schedule, optimizer groups, accumulation, precision,
non-finite detection, checkpoints, metrics, and every stage's `--help`."""
import dataclasses
import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch

from minimind.checkpoint import load_model
from minimind.config import get_config
from minimind.data.datasets import PretrainDataset, SFTDataset, collate_causal_lm
from minimind.model import MiniMind
from minimind.tokenizer import MiniMindTokenizer
from minimind.train import (
    NonFiniteLossError, TrainConfig, build_cli, causal_lm_loss, learning_rate_at, param_groups,
    parse_config, plot_metrics, read_metrics, supervised_lm_loss, train,
)
from minimind.train.config import parse_overrides
from minimind.train.pretrain import PretrainConfig
from minimind.train.pretrain import main as pretrain_main
from minimind.train.sft import SFTConfig
from train_helpers import one_thread, TINY_OVERRIDES, make_tokenizer, pretrain_rows, sft_rows, write_jsonl

@pytest.fixture(scope="module", autouse=True)
def single_thread():
    yield from one_thread()


STAGES = ("pretrain", "sft", "dpo", "lora", "reason", "distill", "rl")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def dataset(tokenizer_dir, tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("data") / "pretrain.jsonl", pretrain_rows(120))
    return PretrainDataset(path, MiniMindTokenizer.from_pretrained(tokenizer_dir), max_seq_len=32)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return MiniMind(get_config("tiny", vocab_size=384, **overrides))


def quiet(**changes):
    return TrainConfig(**{"out_dir": "", "progress": False, "log_interval": 1, "warmup_steps": 2, **changes})


# --- the command line --------------------------------------------------------------------------

@pytest.mark.parametrize("config_cls", [TrainConfig, PretrainConfig, SFTConfig])
def test_cli_has_one_option_per_field_with_its_default(config_cls):
    text = build_cli(config_cls).format_help()
    for f in dataclasses.fields(config_cls):
        assert f"--{f.name}" in text
        assert f.metadata["help"]
    assert text.count("(default:") >= len(dataclasses.fields(config_cls))
    assert parse_config(config_cls, []) == config_cls()


def test_cli_parses_types_and_bare_boolean_flags():
    config = parse_config(PretrainConfig, ["--resume", "--packing", "false", "--lr", "1e-4", "--max_steps", "7"])
    assert (config.resume, config.packing, config.lr, config.max_steps) == (True, False, 1e-4, 7)


def test_upstream_preset_brings_upstream_defaults_but_the_command_line_wins():
    config = parse_config(PretrainConfig, ["--preset", "minimind2-small", "--lr", "1e-4"])
    assert (config.max_seq_len, config.batch_size, config.grad_accum, config.epochs, config.max_steps) == (340, 32, 8, 1, 0)
    assert config.lr == 1e-4 and config.packing is False
    assert parse_config(PretrainConfig, ["--preset", "book"]) == PretrainConfig()


def test_cli_rejects_bad_values():
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--schedule", "linear"])
    with pytest.raises(ValueError, match="--batch_size must be at least 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="--dtype"):
        TrainConfig(dtype="fp8")


def test_model_overrides_are_parsed_with_json_types():
    assert parse_overrides("hidden_size=256, use_moe=true,dropout=0.1,rope_scaling=null") == {
        "hidden_size": 256, "use_moe": True, "dropout": 0.1, "rope_scaling": None}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides("hidden_size")


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_entry_point_prints_help(stage):
    if importlib.util.find_spec(f"minimind.train.{stage}") is None:
        pytest.skip(f"minimind.train.{stage} is not written yet")
    result = subprocess.run([sys.executable, "-m", f"minimind.train.{stage}", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--lr", "--batch_size", "--out_dir", "--resume", "--dtype"):
        assert option in result.stdout


# --- schedule and optimizer --------------------------------------------------------------------

def test_cosine_schedule_warms_up_to_the_peak_then_decays_to_the_floor():
    config = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [learning_rate_at(s, 100, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4)
    # after warm-up: half a cosine over the remaining 90 steps, from the peak (step 10) to the floor (step 99)
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[10 + 40] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 40 / 89)))


def test_upstream_schedule_is_minimind_formula_without_warmup():
    config = TrainConfig(lr=5e-4, schedule="upstream", warmup_steps=50)
    for step in (0, 17, 99):
        t = step + 1
        assert learning_rate_at(step, 100, config) == pytest.approx(5e-4 * (0.1 + 0.45 * (1 + math.cos(math.pi * t / 100))))
    assert learning_rate_at(99, 100, config) == pytest.approx(5e-5)


def test_norms_and_embeddings_are_not_decayed_unless_asked():
    model = tiny_model()
    groups = param_groups(model.named_parameters(), 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 and "embed" not in names[id(p)] for p in groups[0]["params"])
    assert id(model.model.embed_tokens.weight) not in decayed and id(model.model.norm.weight) not in decayed
    assert id(model.model.layers[0].self_attn.q_proj.weight) in decayed
    everything = param_groups(model.named_parameters(), 0.01, decay_norms_and_embeddings=True)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(model.parameters()))


# --- the loop ----------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_logs_every_step(dataset):
    result = train(quiet(max_steps=20, batch_size=8, lr=3e-3), tiny_model(), dataset, collate_causal_lm)
    losses = [r["loss"] for r in result.records]
    assert len(losses) == 20 and result.steps == 20
    assert losses[-1] < losses[0] - 1.0
    assert {"step", "epoch", "lr", "grad_norm", "tokens", "tokens_per_s", "lm_loss", "aux_loss"} <= set(result.records[0])
    assert result.tokens == 20 * 8 * 32


def test_gradient_accumulation_equals_one_large_batch(dataset):
    small = train(quiet(max_steps=4, batch_size=4, grad_accum=2), tiny_model(), dataset, collate_causal_lm)
    large = train(quiet(max_steps=4, batch_size=8, grad_accum=1), tiny_model(), dataset, collate_causal_lm)
    for a, b in zip(small.model.parameters(), large.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # Adam divides by sqrt(v): float noise grows
    assert [r["loss"] for r in small.records] == pytest.approx([r["loss"] for r in large.records], rel=1e-5)


def test_data_loader_workers_do_not_change_the_run(dataset):
    inline = train(quiet(max_steps=3, batch_size=4), tiny_model(), dataset, collate_causal_lm)
    workers = train(quiet(max_steps=3, batch_size=4, num_workers=2), tiny_model(), dataset, collate_causal_lm)
    assert [r["loss"] for r in workers.records] == [r["loss"] for r in inline.records]


def test_epochs_count_full_passes_without_short_steps(dataset):
    steps_per_epoch = len(dataset) // 16
    result = train(quiet(epochs=2, batch_size=16), tiny_model(), dataset, collate_causal_lm)
    assert result.steps == 2 * steps_per_epoch
    assert result.records[-1]["epoch"] == 2.0


def test_non_finite_loss_stops_the_run_naming_the_step(dataset):
    calls = {"n": 0}

    def loss_that_explodes(model, batch):
        calls["n"] += 1
        loss, metrics = causal_lm_loss(model, batch)
        return (loss * float("nan") if calls["n"] == 5 else loss), metrics

    with pytest.raises(NonFiniteLossError, match=r"loss is nan at optimizer step 3 of 10"):
        train(quiet(max_steps=10, batch_size=4, grad_accum=2), tiny_model(), dataset, collate_causal_lm,
              loss_that_explodes)


def test_batch_of_fully_truncated_replies_contributes_zero_loss(tokenizer_dir, tmp_path):
    tokenizer = MiniMindTokenizer.from_pretrained(tokenizer_dir)
    rows = [{"conversations": [{"role": "system", "content": "A long system prompt " * 5},
                               {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Varn"}]}]
    data = SFTDataset(write_jsonl(tmp_path / "sft.jsonl", rows * 4), tokenizer, max_seq_len=8)
    batch = collate_causal_lm([data[i] for i in range(4)])
    assert (batch["labels"] == -100).all()
    for loss_fn in (causal_lm_loss, supervised_lm_loss):
        model = tiny_model()
        loss, _ = loss_fn(model, batch)
        loss.backward()
        assert loss.item() == 0.0 and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_supervised_lm_loss_has_the_loss_and_gradients_of_causal_lm_loss(tokenizer_dir, tmp_path):
    # SFT computes logits only at the reply targets: what is learned must not change
    tokenizer = MiniMindTokenizer.from_pretrained(tokenizer_dir)
    rows = [{"conversations": [{"role": "user", "content": f"question {i} " * (i + 1)},
                               {"role": "assistant", "content": f"answer {i}"}]} for i in range(4)]
    data = SFTDataset(write_jsonl(tmp_path / "sft.jsonl", rows), tokenizer, max_seq_len=64)
    batch = collate_causal_lm([data[i] for i in range(4)])
    assert 0 < (batch["labels"] != -100).float().mean() < 0.6  # prompts and padding are not targets
    model = tiny_model()
    full, full_metrics = causal_lm_loss(model, batch)
    full.backward()
    want = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    selected, metrics = supervised_lm_loss(model, batch)
    selected.backward()
    torch.testing.assert_close(selected, full)
    torch.testing.assert_close(metrics["lm_loss"], full_metrics["lm_loss"])
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], msg=name)


def test_bf16_autocast_trains_on_cpu_and_fp16_is_refused(dataset):
    result = train(quiet(max_steps=12, batch_size=8, dtype="bf16"), tiny_model(), dataset, collate_causal_lm)
    assert result.records[-1]["loss"] < result.records[0]["loss"] - 0.5
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # master weights stay fp32
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train(quiet(max_steps=1, dtype="fp16", device="cpu"), tiny_model(), dataset, collate_causal_lm)


def test_callbacks_see_each_step_and_add_to_its_record(dataset):
    seen = []

    def probe(info):
        seen.append(info.step)
        return {"probe": info.step * 10} if info.step == 3 else None

    result = train(quiet(max_steps=5, batch_size=4, log_interval=100), tiny_model(), dataset, collate_causal_lm,
                   callbacks=[probe])
    assert seen == [1, 2, 3, 4, 5]
    assert [(r["step"], r.get("probe")) for r in result.records] == [(3, 30), (5, None)]


def test_checkpoint_holds_loadable_weights_config_tokenizer_and_metrics(dataset, tokenizer_dir, tmp_path):
    tokenizer = MiniMindTokenizer.from_pretrained(tokenizer_dir)
    config = dataclasses.replace(quiet(max_steps=6, batch_size=4), out_dir=str(tmp_path / "run"))
    result = train(config, tiny_model(), dataset, collate_causal_lm, tokenizer=tokenizer)
    loaded = load_model(tmp_path / "run")
    for (name, a), b in zip(result.model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert MiniMindTokenizer.from_pretrained(tmp_path / "run").encode("Alor lives") == tokenizer.encode("Alor lives")
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == list(range(1, 7))
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["max_steps"] == 6
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_metrics(tmp_path / "run" / "metrics.jsonl", keys=("loss", "lm_loss"), smooth=3)
    assert len(ax.lines) == 2


def test_pretrain_entry_point_trains_and_saves(tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "corpus.jsonl", pretrain_rows(60))
    out = tmp_path / "out"
    args = ["--tokenizer", str(tokenizer_dir), "--data_path", str(data), "--preset", "tiny",
            "--model_overrides", TINY_OVERRIDES, "--max_steps", "5", "--batch_size", "4", "--max_seq_len", "32",
            "--out_dir", str(out), "--progress", "false"]
    assert pretrain_main(args) == 0
    assert load_model(out).config.vocab_size == 384
    with pytest.raises(ValueError, match=r"the tokenizer has \d+ tokens but the model's vocab_size is 256"):
        pretrain_main(args[:-6] + ["--model_overrides", "", "--out_dir", "", "--progress", "false"])


def test_sft_entry_point_starts_from_a_checkpoint(tokenizer_dir, tmp_path):
    from minimind.train.sft import main as sft_main

    from minimind.checkpoint import save_model

    base = save_model(tiny_model(), tmp_path / "base")
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(24))
    assert sft_main(["--init_from", str(base), "--tokenizer", str(tokenizer_dir), "--data_path", str(data),
                     "--max_steps", "3", "--batch_size", "4", "--out_dir", str(tmp_path / "sft"),
                     "--progress", "false"]) == 0
    assert len(read_metrics(tmp_path / "sft" / "metrics.jsonl")) == 1  # log_interval 10 → only the last step
    with pytest.raises(FileNotFoundError, match="--init_from .*missing: no such checkpoint"):
        sft_main(["--init_from", str(tmp_path / "missing"), "--tokenizer", str(tokenizer_dir),
                  "--data_path", str(data), "--progress", "false"])


def test_exact_match_scores_value_replies_up_to_case_and_final_punctuation(monkeypatch):
    from types import SimpleNamespace

    import minimind.eval.replies as replies_module

    items = [SimpleNamespace(prompt=f"q{i}", answer=a) for i, a in enumerate(["Varo", "63", "tailor", "猫"])]
    monkeypatch.setattr(replies_module, "answer_questions",
                        lambda model, tok, questions, max_new_tokens: ["varo.", "63", "a tailor", "猫。"])
    score, replies = replies_module.exact_match(None, None, items)
    assert score == 0.75 and replies[2] == "a tailor"


# --- activation checkpointing ------------------------------------------------------------------

def _saved_bytes_and_grads(model, ids):
    """Bytes autograd keeps for the backward pass (measured with saved-tensor hooks), and the
    gradients of one forward + backward."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(ids, labels=ids)
    (out.loss + out.aux_loss).backward()
    return sum(saved), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("overrides", [{}, {"dropout": 0.2}, {"use_moe": True, "aux_loss_alpha": 0.1}])
def test_gradient_checkpointing_gives_the_same_gradients_from_far_less_saved_activation(overrides):
    model = tiny_model(num_hidden_layers=4, **overrides).train()
    ids = torch.randint(0, 384, (2, 48), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)  # dropout draws the same masks in both runs (checkpointing replays the RNG)
    plain_bytes, plain_grads = _saved_bytes_and_grads(model, ids)
    model.gradient_checkpointing_enable()
    torch.manual_seed(1)
    ckpt_bytes, ckpt_grads = _saved_bytes_and_grads(model, ids)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(ckpt_grads[name], plain_grads[name], rtol=0, atol=0, msg=name)
    # the blocks keep only their inputs: what is saved shrinks to the embedding, loss and block inputs
    assert ckpt_bytes < 0.5 * plain_bytes, (ckpt_bytes, plain_bytes)


def test_gradient_checkpointing_is_inactive_at_inference():
    model = tiny_model().eval()
    model.gradient_checkpointing_enable()
    ids = torch.randint(0, 384, (1, 16), generator=torch.Generator().manual_seed(0))
    out = model(ids, use_cache=True)  # with a cache and in eval mode the blocks run directly
    assert out.cache is not None and out.cache.length == 16


def test_engine_grad_checkpointing_option_reproduces_the_run(dataset):
    plain = train(quiet(max_steps=3, batch_size=4), tiny_model(), dataset, collate_causal_lm)
    ckpt = train(quiet(max_steps=3, batch_size=4, grad_checkpointing=True), tiny_model(), dataset, collate_causal_lm)
    assert ckpt.model.model.gradient_checkpointing and not plain.model.model.gradient_checkpointing
    assert [r["loss"] for r in ckpt.records] == [r["loss"] for r in plain.records]
    for a, b in zip(plain.model.parameters(), ckpt.model.parameters()):
        assert torch.equal(a, b)


# --- failures a user causes: one line naming the file or option, not a traceback ------------------

# The child runs with a small file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored so a write beyond it
# fails with EFBIG, as a full disk fails with ENOSPC): the checkpoint write fails.
_FILE_SIZE_LIMITED = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
sys.argv = ["minimind"] + sys.argv[1:]
runpy.run_module("minimind.cli", run_name="__main__")
"""


def test_a_full_disk_while_saving_is_one_line_naming_the_file(tokenizer_dir, tmp_path):
    data = write_jsonl(tmp_path / "corpus.jsonl", pretrain_rows(60))
    out = tmp_path / "out"
    args = ["train", "pretrain", "--tokenizer", str(tokenizer_dir), "--data_path", str(data), "--preset", "tiny",
            "--model_overrides", TINY_OVERRIDES, "--max_steps", "2", "--batch_size", "4", "--max_seq_len", "32",
            "--out_dir", str(out), "--progress", "false"]
    result = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMITED, *args], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"minimind train: {out / 'model.safetensors'}: cannot write it (File too large)"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_missing_cuda_device_is_named(tokenizer_dir, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from minimind.cli import main as cli_main

    data = write_jsonl(tmp_path / "corpus.jsonl", pretrain_rows(20))
    assert cli_main(["train", "pretrain", "--tokenizer", str(tokenizer_dir), "--data_path", str(data),
                     "--preset", "tiny", "--model_overrides", TINY_OVERRIDES, "--device", "cuda",
                     "--out_dir", "", "--progress", "false"]) == 2
    assert capsys.readouterr().err.strip() == "minimind train: --device cuda: CUDA is not available on this machine"
