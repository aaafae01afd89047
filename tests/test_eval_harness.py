"""The "minimind" lm-eval model gives, request by request, what lm-eval's own HF backend gives on the
transformers export of the same weights: log-likelihoods to 1e-4, rolling log-likelihoods, and
identical generations. Offline: the tasks are the local ones in tests/lm_eval_tasks."""
import json
import random
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")

import lm_eval.models  # noqa: E402  (registers lm-eval's own backends, "hf" among them)
from lm_eval.tasks import TaskManager  # noqa: E402

from minimind.config import get_config  # noqa: E402
from minimind.data.synthetic import PRETRAIN_QA_FORMAT, build_world  # noqa: E402
from minimind.data.datasets import PretrainDataset, collate_causal_lm  # noqa: E402
from minimind.eval.harness import MiniMindLM, evaluate_tasks, load_tasks, task_manager  # noqa: E402
from minimind.export.transformers import export_transformers  # noqa: E402
from minimind.generate import generate_batch  # noqa: E402
from minimind.model import MiniMind  # noqa: E402
from minimind.tokenizer import train_tokenizer  # noqa: E402
from minimind.train import TrainConfig, train  # noqa: E402
from train_helpers import one_thread  # noqa: E402

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
LOCAL_TASKS = ["minimind_facts_mc", "minimind_facts_gen", "minimind_bios_rolling"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    """No Hub access, as on the machine that runs `make test`, and no writes to the user's caches."""
    import datasets
    import huggingface_hub.constants

    patch = pytest.MonkeyPatch()
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        patch.setenv(name, "1")
    patch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    patch.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_datasets")))
    yield
    patch.undo()


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model trained for a few seconds on the synthetic world (so its greedy replies vary
    and its argmaxes are clear of ties), exported as a transformers Llama folder with its tokenizer."""
    world = build_world(0)
    rng = random.Random(0)
    texts = [world.biography(p, lang, rng) for p in world.people for lang in ("en", "zh") for _ in range(2)]
    texts += [PRETRAIN_QA_FORMAT[q.lang].format(question=q.prompt, answer=q.answer) for q in world.questions()[::6]]
    rng.shuffle(texts)
    tokenizer = train_tokenizer(texts, vocab_size=512)
    corpus = tmp_path_factory.mktemp("corpus") / "pretrain.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    torch.manual_seed(0)
    # a context of 96 tokens: the longest rolling document needs several windows
    model = MiniMind(get_config("tiny", vocab_size=512, max_position_embeddings=96))
    config = TrainConfig(out_dir="", progress=False, max_steps=120, batch_size=16, lr=3e-3, warmup_steps=10)
    model = train(config, model, PretrainDataset(corpus, tokenizer, max_seq_len=64), collate_causal_lm).model.eval()
    folder = export_transformers(model, tmp_path_factory.mktemp("export"), tokenizer=tokenizer)
    return model, tokenizer, folder


@pytest.fixture(scope="module")
def local_tasks():
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


def responses(results, task):
    """Per request of `task`: the model's raw answer (a float, a (float, bool) or a string)."""
    return [answer for sample in results["samples"][task] for (answer,) in sample["resps"]]


@pytest.fixture(scope="module")
def both_backends(exported, local_tasks):
    _, _, folder = exported
    runs = {}
    for name, model_args in (("hf", {"pretrained": str(folder), "dtype": "float32", "device": "cpu"}),
                             ("minimind", {"path": str(folder), "device": "cpu"})):
        runs[name] = lm_eval.simple_evaluate(model=name, model_args=model_args, tasks=LOCAL_TASKS,
                                             task_manager=local_tasks, batch_size=8, log_samples=True)
    return runs


def test_loglikelihoods_equal_the_hf_backend_on_the_exported_model(both_backends):
    ours, theirs = responses(both_backends["minimind"], "minimind_facts_mc"), responses(both_backends["hf"], "minimind_facts_mc")
    assert len(ours) == len(theirs) == 80  # 20 questions x 4 choices
    assert max(abs(a[0] - b[0]) for a, b in zip(ours, theirs)) < TOLERANCE
    assert [a[1] for a in ours] == [b[1] for b in theirs]  # is_greedy
    assert (both_backends["minimind"]["results"]["minimind_facts_mc"]["acc,none"]
            == both_backends["hf"]["results"]["minimind_facts_mc"]["acc,none"])


def test_rolling_loglikelihoods_equal_the_hf_backend_across_windows(both_backends, exported):
    _, tokenizer, _ = exported
    ours, theirs = responses(both_backends["minimind"], "minimind_bios_rolling"), responses(both_backends["hf"], "minimind_bios_rolling")
    assert len(ours) == len(theirs) == 6
    longest = max(len(tokenizer.encode(s["doc"]["text"])) for s in both_backends["minimind"]["samples"]["minimind_bios_rolling"])
    assert longest > 2 * 96  # the long document is scored in several windows
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < TOLERANCE


def test_generations_equal_the_hf_backend(both_backends):
    ours, theirs = responses(both_backends["minimind"], "minimind_facts_gen"), responses(both_backends["hf"], "minimind_facts_gen")
    assert len(ours) == 10 and ours == theirs
    assert len(set(ours)) > 1  # replies that differ, not one degenerate string


def test_adapter_scores_equal_our_own_forward_pass(exported):
    """Independent of lm-eval's HF backend: one request checked against MiniMind's logits by hand."""
    model, tokenizer, _ = exported
    lm = MiniMindLM(model=model, tokenizer=tokenizer, batch_size=2)
    context, continuation = tokenizer.encode("Boli lives in"), tokenizer.encode(" Luneth.")
    ((logprob, greedy),) = lm._loglikelihood_tokens([(None, context, continuation)])
    with torch.no_grad():
        logprobs = model(torch.tensor([context + continuation])).logits[0].log_softmax(-1)
    expected = sum(logprobs[len(context) - 1 + i, t] for i, t in enumerate(continuation))
    assert logprob == pytest.approx(float(expected), abs=1e-5)


def test_chat_template_renders_as_the_exported_tokenizer_does(exported):
    _, tokenizer, folder = exported
    lm = MiniMindLM(model=exported[0], tokenizer=tokenizer)
    history = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Where does Boli live?"}]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert lm.apply_chat_template(history) == hf_tokenizer.apply_chat_template(history, tokenize=False,
                                                                               add_generation_prompt=True)
    assert lm.chat_template(True) == hf_tokenizer.chat_template


def test_generation_options_the_model_cannot_honour_are_refused(exported):
    model, tokenizer, _ = exported
    lm = MiniMindLM(model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"does not support: \['num_beams'\]"):
        lm._sampling_params({"until": ["\n"], "num_beams": 4})
    params, until = lm._sampling_params({"until": "\n", "max_gen_toks": 5, "do_sample": True, "temperature": 0.7})
    assert (params.max_new_tokens, params.temperature, until) == (5, 0.7, ["\n", "<|im_end|>"])
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        MiniMindLM(model=model, tokenizer=tokenizer, batch_size="auto")


def test_generate_batch_stop_when_ends_rows_and_then_the_whole_batch(exported):
    model, tokenizer, _ = exported
    prompts = [tokenizer.encode("Boli lives in"), tokenizer.encode("Q: How old is Bivam?\nA:")]
    full = generate_batch(model, prompts, max_new_tokens=12, stop_token_ids=())
    calls = []
    cut = generate_batch(model, prompts, max_new_tokens=12, stop_token_ids=(),
                         stop_when=lambda row, ids: calls.append(row) or len(ids) == 3 + row)
    assert cut == [full[0][:3], full[1][:4]]
    assert calls == [0, 1, 0, 1, 0, 1, 1]  # a row that has ended is not asked again; decoding stops after step 4


def test_local_tasks_hold_facts_of_the_book_world():
    """The shipped task files are questions about build_world(0) with their true answers."""
    world = build_world(0)
    for row in map(json.loads, (TASKS_DIR / "minimind_facts_mc.jsonl").read_text(encoding="utf-8").splitlines()):
        assert row["choices"][row["answer"]] == world.person(row["person"]).value(row["attribute"], "en")
        assert len(set(row["choices"])) == 4
    for row in map(json.loads, (TASKS_DIR / "minimind_facts_gen.jsonl").read_text(encoding="utf-8").splitlines()):
        assert row["answer"] == world.person(row["person"]).value(row["attribute"], row["lang"])


def test_minimind_eval_runs_a_local_task_without_indexing_the_built_in_tasks(exported, capsys, tmp_path):
    from minimind.cli import main

    folder = exported[2]
    out = tmp_path / "results.json"
    assert main(["eval", "--model", str(folder), "--lm-eval-tasks", "minimind_facts_mc,minimind_bios_rolling",
                 "--lm-eval-include-path", str(TASKS_DIR), "--limit", "5", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["lm_eval"]["n-samples"]["minimind_facts_mc"]["effective"] == 5
    assert 0 <= report["lm_eval"]["results"]["minimind_facts_mc"]["acc,none"] <= 1
    assert report["lm_eval"]["results"]["minimind_bios_rolling"]["bits_per_byte,none"] > 0
    assert "minimind_facts_mc" in capsys.readouterr().out  # lm-eval's results table


def test_task_manager_falls_back_to_the_built_in_tasks_only_when_needed():
    local = task_manager(["minimind_facts_mc", "minimind_book"], TASKS_DIR)
    assert set(local.all_tasks) == {*LOCAL_TASKS, "minimind_book"}
    assert len(load_tasks(["minimind_book"], local)) == 3  # a tag stands for its tasks


def test_lm_eval_command_line_finds_the_minimind_model(exported, tmp_path):
    """`python -m minimind.eval.harness` is lm-eval's own CLI with "minimind" registered. (It indexes
    lm-eval's ~14,000 built-in task files first, as `lm_eval` always does: the slow part of this test.)"""
    from minimind.eval.harness import main

    main(["run", "--model", "minimind", "--model_args", f"path={exported[2]}", "--batch_size", "4",
          "--tasks", "minimind_facts_mc", "--include_path", str(TASKS_DIR), "--limit", "4",
          "--output_path", str(tmp_path / "out")])
    (written,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(written.read_text())
    assert results["config"]["model"] == "minimind" and results["n-samples"]["minimind_facts_mc"]["effective"] == 4


def test_evaluate_tasks_accepts_an_adapter_built_from_a_path(exported, local_tasks):
    lm = MiniMindLM(path=str(exported[2]), device="cpu", batch_size=3)
    results = evaluate_tasks(lm, load_tasks(["minimind_facts_gen"], local_tasks), local_tasks, limit=3)
    assert results["n-samples"]["minimind_facts_gen"]["effective"] == 3
    assert results["config"]["model_path"] == str(exported[2])
