"""`minimind eval`: suites and bits per byte end to end into one JSON report, and every kind of bad
input ending in one clear line on stderr with exit code 2."""
import json
from pathlib import Path

import pytest
import torch

from minimind.checkpoint import save_model
from minimind.cli import main
from minimind.config import get_config
from minimind.data.synthetic import build_world
from minimind.model import MiniMind
from minimind.tokenizer import train_tokenizer
from train_helpers import one_thread

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random model saved with its tokenizer, as the training stages save one."""
    world = build_world(0)
    tokenizer = train_tokenizer([q.prompt + " " + q.answer for q in world.questions()[:300]], vocab_size=400)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    save_model(MiniMind(get_config("tiny", vocab_size=tokenizer.vocab_size)), folder)
    tokenizer.save(folder)
    return folder


@pytest.fixture
def offline(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


def test_suites_and_bits_per_byte_go_to_the_terminal_and_the_report(checkpoint, tmp_path, capsys):
    text = tmp_path / "val.jsonl"
    text.write_text('{"text": "Boli lives in Luneth."}\n{"text": "Boli今年66岁。"}\n', encoding="utf-8")
    out = tmp_path / "report" / "results.json"
    assert main(["eval", "--model", str(checkpoint), "--suites", "facts,identity", "--bpb", str(text),
                 "--limit", "3", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["model"] == str(checkpoint) and report["parameters"] > 0
    assert [(s["suite"], s["group"], s["n"]) for s in report["suites"]] == [
        ("facts", "trained", 3), ("facts", "reworded", 3), ("facts", "heldout", 3), ("identity", "heldout", 3)]
    for score in report["suites"]:
        assert score["ci95"][0] <= score["rate"] <= score["ci95"][1]
    bpb = report["bits_per_byte"]
    assert bpb["documents"] == 2 and bpb["bytes"] == len("Boli lives in Luneth.Boli今年66岁。".encode())
    printed = capsys.readouterr().out
    assert "facts       heldout" in printed and f"{bpb['bits_per_byte']:.4f}" in printed


def test_python_dash_m_minimind_eval_is_the_same_command(checkpoint, capsys):
    from minimind.eval.__main__ import main as eval_main

    assert eval_main(["--model", str(checkpoint), "--suites", "identity", "--limit", "2"]) == 0
    assert "identity    heldout   minimind" in capsys.readouterr().out


def error_line(capsys) -> str:
    """The command's own message: exactly one line, the last one on stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    ours = [line for line in lines if line.startswith("minimind eval:")]
    assert len(ours) == 1 and lines[-1] == ours[0]
    return ours[0]


def test_nothing_to_evaluate(checkpoint, capsys):
    assert main(["eval", "--model", str(checkpoint)]) == 2
    assert error_line(capsys) == "minimind eval: nothing to evaluate: give --suites, --lm_eval_tasks and/or --bpb"


def test_unknown_suite(checkpoint, capsys):
    assert main(["eval", "--model", str(checkpoint), "--suites", "facts,tool_use"]) == 2
    assert "unknown suite 'tool_use'; choose from facts, reasoning, preference, identity, tools" in error_line(capsys)


def test_missing_text_file(checkpoint, tmp_path, capsys):
    assert main(["eval", "--model", str(checkpoint), "--bpb", str(tmp_path / "nope.txt")]) == 2
    assert error_line(capsys) == f"minimind eval: {tmp_path / 'nope.txt'}: no such text file"


def test_checkpoint_that_does_not_exist(capsys, tmp_path):
    assert main(["eval", "--model", str(tmp_path / "missing" / "ckpt"), "--suites", "facts"]) == 2
    assert error_line(capsys) == f"minimind eval: cannot load checkpoint '{tmp_path / 'missing' / 'ckpt'}': " \
                                 f"{tmp_path / 'missing' / 'ckpt'}: no such checkpoint"


def test_checkpoint_whose_weights_are_corrupt(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((checkpoint / name).read_bytes())
    (broken / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:100])  # cut short
    assert main(["eval", "--model", str(broken), "--suites", "facts"]) == 2
    assert error_line(capsys).startswith(f"minimind eval: cannot load checkpoint '{broken}': ")


def test_checkpoint_of_another_shape(checkpoint, tmp_path, capsys):
    other = tmp_path / "other"
    save_model(MiniMind(get_config("tiny", vocab_size=600)), other)
    (other / "config.json").write_text((checkpoint / "config.json").read_text())  # config says 400 tokens
    assert main(["eval", "--model", str(other), "--suites", "facts"]) == 2
    # the loader counts the parameters the config describes before it builds a model (see test_checkpoint)
    assert "the config does not belong to these weights" in error_line(capsys)


def test_task_that_needs_the_network_while_offline(checkpoint, tmp_path, offline, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "arc_copy.yaml").write_text(
        "task: arc_copy\ndataset_path: allenai/ai2_arc\ndataset_name: ARC-Easy\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices.text}}'\n"
        "doc_to_target: '{{choices.label.index(answerKey)}}'\nmetric_list:\n  - metric: acc\n")
    assert main(["eval", "--model", str(checkpoint), "--lm-eval-tasks", "arc_copy",
                 "--lm-eval-include-path", str(tasks)]) == 2
    line = error_line(capsys)
    assert line.startswith("minimind eval: lm-eval task 'arc_copy' needs its dataset from the Hugging Face Hub")
    assert "allenai/ai2_arc" in line


def test_missing_task_folder(checkpoint, tmp_path, capsys):
    assert main(["eval", "--model", str(checkpoint), "--lm-eval-tasks", "x",
                 "--lm-eval-include-path", str(tmp_path / "none")]) == 2
    assert error_line(capsys) == f"minimind eval: {tmp_path / 'none'}: no such task folder"


def test_unknown_lm_eval_task(checkpoint, capsys):
    """Slow part: telling a task is unknown means indexing lm-eval's ~14,000 built-in task files."""
    assert main(["eval", "--model", str(checkpoint), "--lm-eval-tasks", "minimind_facts_mc,arc_easyy",
                 "--lm-eval-include-path", str(TASKS_DIR)]) == 2
    assert error_line(capsys).startswith("minimind eval: unknown lm-eval task 'arc_easyy'")


def test_task_that_cannot_be_built(checkpoint, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "broken.yaml").write_text("task: broken\ncustom_dataset: !function nowhere.load\noutput_type: multiple_choice\n")
    assert main(["eval", "--model", str(checkpoint), "--lm-eval-tasks", "broken", "--lm-eval-include-path", str(tasks)]) == 2
    assert error_line(capsys).startswith("minimind eval: lm-eval task 'broken' could not be built: ")
