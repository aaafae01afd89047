"""--report_to: a training run's metrics, watched live in TensorBoard (or wandb), equal its JSONL records."""
import dataclasses
import sys
import types

import numpy as np
import pytest
import torch

from minimind.config import get_config
from minimind.data.datasets import PretrainDataset, collate_causal_lm
from minimind.model import MiniMind
from minimind.tokenizer import MiniMindTokenizer
from minimind.train import TrainConfig, read_metrics, train
from minimind.train.metrics import TENSORBOARD_DIR, MetricsLog
from train_helpers import make_tokenizer, one_thread, pretrain_rows, write_jsonl


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tokenizer = MiniMindTokenizer.from_pretrained(make_tokenizer(tmp_path_factory.mktemp("tok")))
    path = write_jsonl(tmp_path_factory.mktemp("data") / "pretrain.jsonl", pretrain_rows(64))
    return PretrainDataset(path, tokenizer, max_seq_len=32)


def short_run(dataset, out_dir, callbacks=(), **changes):
    torch.manual_seed(0)
    config = TrainConfig(**{"out_dir": str(out_dir), "progress": False, "max_steps": 6, "batch_size": 8,
                            "log_interval": 2, **changes})
    return train(config, MiniMind(get_config("tiny", vocab_size=384)), dataset, collate_causal_lm, callbacks=callbacks)


def read_scalars(log_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_read_back_equal_the_jsonl_metrics(dataset, tmp_path):
    short_run(dataset, tmp_path / "run", report_to="tensorboard")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4, 6]
    scalars = read_scalars(tmp_path / "run" / TENSORBOARD_DIR)
    metric_names = {k for r in records for k in r if k != "step"}
    assert set(scalars) == metric_names and {"loss", "lr", "grad_norm", "tokens_per_s"} <= metric_names
    for name, points in scalars.items():
        expected = [(r["step"], np.float32(r[name])) for r in records]  # event files store float32
        assert points == expected, name


def test_no_report_writes_no_event_files(dataset, tmp_path):
    short_run(dataset, tmp_path / "run")
    assert not (tmp_path / "run" / TENSORBOARD_DIR).exists()


class Interrupted(Exception):
    pass


def test_resumed_run_replaces_the_dashboard_steps_after_its_checkpoint(dataset, tmp_path):
    def crash_after_step_5(info):
        if info.step == 5:
            raise Interrupted

    with pytest.raises(Interrupted):  # logged steps 1..4, last checkpoint at step 3
        short_run(dataset, tmp_path / "run", report_to="tensorboard", log_interval=1, save_interval=3,
                  callbacks=[crash_after_step_5])
    short_run(dataset, tmp_path / "run", report_to="tensorboard", log_interval=1, save_interval=3, resume=True)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    # step 4 of the crashed run is gone from the dashboard too: one point per step, the resumed run's
    assert read_scalars(tmp_path / "run" / TENSORBOARD_DIR)["loss"] == [(r["step"], np.float32(r["loss"])) for r in records]


def test_report_needs_a_metrics_file(dataset):
    config = TrainConfig(out_dir="", progress=False, max_steps=1, batch_size=8, report_to="tensorboard")
    with pytest.raises(ValueError, match="--report_to tensorboard: the run writes no metrics file"):
        train(config, MiniMind(get_config("tiny", vocab_size=384)), dataset, collate_causal_lm)


def test_unknown_report_target_is_refused_by_the_config():
    with pytest.raises(ValueError, match="--report_to must be one of"):
        TrainConfig(report_to="mlflow")


def test_wandb_missing_is_one_clear_error_before_anything_is_written(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb → ImportError, as when not installed
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    with pytest.raises(ValueError, match=r"--report_to wandb: wandb is not installed \(pip install wandb\)"):
        MetricsLog(tmp_path / "metrics.jsonl", report_to="wandb")
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]


def test_wandb_gets_every_record_at_its_step(monkeypatch, dataset, tmp_path):
    calls = []

    class FakeRun:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    result = short_run(dataset, tmp_path / "run", report_to="wandb")
    (_, init_kwargs), *logs, finish = calls
    assert init_kwargs["project"] == "minimind" and init_kwargs["name"] == "run"
    assert init_kwargs["config"] == dataclasses.asdict(TrainConfig(out_dir=str(tmp_path / "run"), progress=False,
                                                                   max_steps=6, batch_size=8, log_interval=2,
                                                                   report_to="wandb"))
    assert finish == ("finish",)
    assert [(step, values) for _, step, values in logs] == [
        (r["step"], {k: v for k, v in r.items() if k != "step"}) for r in result.records]
