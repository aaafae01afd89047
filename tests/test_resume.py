"""Resume: an interrupted run continued from its checkpoint ends with the same weights, bit for bit,
and a process killed while writing a checkpoint leaves the previous one loadable."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from minimind.checkpoint import load_model
from minimind.config import get_config
from minimind.data.datasets import PretrainDataset, collate_causal_lm
from minimind.model import MiniMind
from minimind.tokenizer import MiniMindTokenizer
from minimind.train import TrainConfig, read_metrics, train
from minimind.train.state import RESUME_FILE, load_resume_state
from train_helpers import one_thread, make_tokenizer, pretrain_rows, write_jsonl


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    yield from one_thread()


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    tokenizer_dir = make_tokenizer(root / "tok")
    data = write_jsonl(root / "pretrain.jsonl", pretrain_rows(30))
    return tokenizer_dir, data


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    """The reference: the whole run in one go."""
    out = tmp_path_factory.mktemp("full") / "run"
    return train(config_for(out), make_model(), make_dataset(setup), collate_causal_lm), out


def make_dataset(setup):
    tokenizer_dir, data = setup
    return PretrainDataset(data, MiniMindTokenizer.from_pretrained(tokenizer_dir), max_seq_len=24)


def make_model():
    torch.manual_seed(0)
    # dropout makes the run consume the RNG every step: resume must restore it exactly
    return MiniMind(get_config("tiny", vocab_size=384, dropout=0.1))


def config_for(out_dir, **changes):
    # 2 micro-batches of 4 per step, a checkpoint every 3 steps; the run crosses epoch boundaries
    return TrainConfig(**{"out_dir": str(out_dir), "progress": False, "max_steps": 7, "batch_size": 4,
                          "grad_accum": 2, "save_interval": 3, "log_interval": 1, "warmup_steps": 2, **changes})


def stop_after(step):
    def callback(info):
        if info.step == step:
            raise Interrupted(f"simulated crash after step {step}")
    return callback


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(setup, uninterrupted, tmp_path):
    dataset = make_dataset(setup)
    assert 2 <= len(dataset) // (4 * 2) < 5, "the run should cross an epoch boundary after a checkpoint"
    full, full_dir = uninterrupted

    with pytest.raises(Interrupted):
        train(config_for(tmp_path / "cut"), make_model(), dataset, collate_causal_lm, callbacks=[stop_after(5)])
    assert load_resume_state(tmp_path / "cut" / RESUME_FILE)["step"] == 3  # the last checkpoint
    resumed = train(config_for(tmp_path / "cut", resume=True), make_model(), dataset, collate_causal_lm)

    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    for a, b in zip(load_model(full_dir).parameters(), load_model(tmp_path / "cut").parameters()):
        assert torch.equal(a, b)
    # the metrics of the lost steps 4-5 were dropped and logged again by the resumed run
    full_log, cut_log = read_metrics(full_dir / "metrics.jsonl"), read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in cut_log] == list(range(1, 8))
    assert [r["loss"] for r in cut_log] == [r["loss"] for r in full_log]


def test_resume_file_is_full_precision_and_loads_weights_only(uninterrupted):
    state = torch.load(uninterrupted[1] / RESUME_FILE, weights_only=True)
    assert all(t.dtype == torch.float32 for t in state["model"].values())
    assert state["optimizer"]["state"] and state["step"] == 7 and len(state["rng"]) == 1


def test_resume_refuses_a_different_batch_layout(setup, uninterrupted):
    with pytest.raises(ValueError, match="saved with grad_accum=2, now 1"):
        train(config_for(uninterrupted[1], resume=True, grad_accum=1), make_model(), make_dataset(setup),
              collate_causal_lm)


def test_resume_without_a_checkpoint_starts_fresh(setup, tmp_path):
    dataset = make_dataset(setup)
    fresh = train(config_for(tmp_path / "a", max_steps=2), make_model(), dataset, collate_causal_lm)
    resumed = train(config_for(tmp_path / "b", max_steps=2, resume=True), make_model(), dataset, collate_causal_lm)
    assert all(torch.equal(a, b) for a, b in zip(fresh.model.parameters(), resumed.model.parameters()))


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch, safetensors.torch
    sys.path.insert(0, {tests!r})
    import test_resume as t
    from minimind.train import train
    from minimind.data.datasets import collate_causal_lm

    target = {target!r}
    def dies_halfway(real):
        def write(obj, path, *args, **kwargs):
            # a partial file where the temp file was going (torch.save is given an open file)
            with open(path, "wb") if isinstance(path, str) else path as f:
                f.write(b"half a checkpoint")
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return write
    if target == "resume":
        torch.save = dies_halfway(torch.save)
    else:
        safetensors.torch.save_file = dies_halfway(safetensors.torch.save_file)
    setup = ({tokenizer_dir!r}, {data!r})
    train(t.config_for({out!r}, resume=True), t.make_model(), t.make_dataset(setup), collate_causal_lm)
""")


@pytest.mark.parametrize("target", ["resume", "weights"])
def test_kill_during_checkpoint_write_leaves_previous_checkpoint_loadable(setup, uninterrupted, tmp_path, target):
    tokenizer_dir, data = setup
    dataset = make_dataset(setup)
    out = tmp_path / "run"
    with pytest.raises(Interrupted):  # a checkpoint at step 3, then a crash
        train(config_for(out), make_model(), dataset, collate_causal_lm, callbacks=[stop_after(4)])
    weights_before = load_model(out).state_dict()
    resume_before = (out / RESUME_FILE).read_bytes()

    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), target=target, tokenizer_dir=str(tokenizer_dir),
                                data=str(data), out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == -9, result.stderr  # killed by SIGKILL inside the write at step 6

    assert (out / RESUME_FILE).read_bytes() == resume_before
    assert load_resume_state(out / RESUME_FILE)["step"] == 3
    if target == "weights":
        after = load_model(out).state_dict()
        assert all(torch.equal(weights_before[k], after[k]) for k in weights_before)
    else:
        load_model(out)  # the new weights were complete before the resume write began
    # and the run can still be resumed to the end, as if nothing had happened
    finished = train(config_for(out, resume=True), make_model(), dataset, collate_causal_lm)
    reference = uninterrupted[0]
    assert all(torch.equal(a, b) for a, b in zip(finished.model.parameters(), reference.model.parameters()))
    assert json.loads((out / "train_config.json").read_text())["resume"] is True


def test_a_corrupt_resume_file_is_named(setup, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(config_for(out), make_model(), make_dataset(setup), collate_causal_lm, callbacks=[stop_after(4)])
    (out / RESUME_FILE).write_bytes((out / RESUME_FILE).read_bytes()[:3000])
    with pytest.raises(ValueError, match=rf"{out / RESUME_FILE}: not a readable resume file \(.*\); delete it"):
        train(config_for(out, resume=True), make_model(), make_dataset(setup), collate_causal_lm)


def test_a_rerun_into_a_finished_run_is_refused_unless_asked(setup, uninterrupted, tmp_path):
    finished = uninterrupted[1]
    before = {p.name: p.read_bytes() for p in finished.iterdir()}
    with pytest.raises(ValueError, match=rf"{finished} already holds a training run .*--resume .*--overwrite"):
        train(config_for(finished), make_model(), make_dataset(setup), collate_causal_lm)
    assert {p.name: p.read_bytes() for p in finished.iterdir()} == before  # nothing was touched
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in before.items():
        (copy / name).write_bytes(data)
    (copy / RESUME_FILE).unlink()  # as the zoo keeps a finished run: --resume has nothing to continue from
    with pytest.raises(ValueError, match="already holds a training run"):
        train(config_for(copy, resume=True), make_model(), make_dataset(setup), collate_causal_lm)
    again = train(config_for(copy, overwrite=True, max_steps=2), make_model(), make_dataset(setup), collate_causal_lm)
    assert again.steps == 2 and load_resume_state(copy / RESUME_FILE)["step"] == 2


def test_resume_removes_temporary_files_an_interrupted_write_left(setup, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(config_for(out), make_model(), make_dataset(setup), collate_causal_lm, callbacks=[stop_after(4)])
    stale = [out / ".resume.pt.k2j4x9ab.tmp", out / ".model.safetensors.a8c1qz_0.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("not ours")
    train(config_for(out, resume=True), make_model(), make_dataset(setup), collate_causal_lm)
    assert not any(path.exists() for path in stale) and (out / "notes.tmp").exists()


def test_weights_and_resume_file_agree_after_a_crash_between_their_writes(setup, uninterrupted, tmp_path, monkeypatch):
    import minimind.train.state as state_module

    out = tmp_path / "run"
    real_save = state_module.save_resume_state

    def crash_at_step_6(path, state):
        if state["step"] == 6:
            raise Interrupted("killed after the weights were written, before the resume file")
        real_save(path, state)

    monkeypatch.setattr(state_module, "save_resume_state", crash_at_step_6)
    with pytest.raises(Interrupted):
        train(config_for(out, save_interval=3, max_steps=7), make_model(), make_dataset(setup), collate_causal_lm)
    monkeypatch.setattr(state_module, "save_resume_state", real_save)
    assert load_resume_state(out / RESUME_FILE)["step"] == 3

    def weights_agree_with_the_resume_file(info):
        resumed = load_resume_state(out / RESUME_FILE)["model"]
        on_disk = load_model(out).state_dict()
        assert all(torch.equal(resumed[k], on_disk[k]) for k in resumed), "weights and resume file disagree"
        raise Interrupted("checked")

    with pytest.raises(Interrupted, match="checked"):  # the first step after resuming sees the pair
        train(config_for(out, resume=True), make_model(), make_dataset(setup), collate_causal_lm,
              callbacks=[weights_agree_with_the_resume_file])
