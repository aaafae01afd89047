"""The book's held-out suites: Wilson intervals, item selection, and scoring that a perfect, an
empty and a real (tiny) model's replies drive to the expected shares."""
import math

import pytest
import torch

from minimind.config import get_config
from minimind.data.synthetic import MINIMIND_IDENTITY, build_world, dataset_rows
from minimind.eval.suites import SUITES, Score, parse_suites, run_suites, subset, wilson_interval
from minimind.model import MiniMind
from minimind.tokenizer import train_tokenizer
from train_helpers import one_thread


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    yield from one_thread()


# --- intervals -----------------------------------------------------------------------------------

def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # not the collapsed [0, 0]
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


@pytest.mark.parametrize("n", [1, 7, 30, 200, 3000])
def test_wilson_bounds_solve_the_score_equation(n):
    """Each bound b is where the observed share is z standard errors away: (p̂ - b)² = z² b(1-b)/n."""
    z = 1.959963984540054
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        low, high = wilson_interval(k, n)
        assert 0 <= low <= k / n <= high <= 1
        for bound in (low, high):
            if 0 < bound < 1:
                assert (k / n - bound) ** 2 * n == pytest.approx(z * z * bound * (1 - bound), rel=1e-9, abs=1e-12)


def test_interval_narrows_with_more_items_and_rejects_impossible_counts():
    widths = [high - low for low, high in (wilson_interval(n // 2, n) for n in (10, 100, 1000))]
    assert widths[0] > widths[1] > widths[2] and widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1000), rel=0.01)
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_score_reports_its_share_and_interval():
    score = Score("facts", "heldout", "accuracy", 30, 120)
    assert score.rate == 0.25 and score.to_dict()["ci95"] == list(wilson_interval(30, 120))
    assert "facts" in str(score) and "0.250" in str(score) and "n=120" in str(score)


# --- choosing suites and items -------------------------------------------------------------------

def test_subset_is_a_fixed_random_selection_in_order():
    picked = subset(range(100), 10)
    assert len(picked) == 10 and picked == sorted(picked) and picked == subset(range(100), 10)
    assert picked != list(range(10))
    assert subset(range(3), 5) == [0, 1, 2] and subset(range(3), None) == [0, 1, 2]
    items = subset(build_world(0).questions("heldout", "train"), 40)
    assert {item.lang for item in items} == {"en", "zh"} and len({item.attribute for item in items}) == 5
    with pytest.raises(ValueError, match="--limit must be at least 1"):
        subset(range(3), 0)


def test_parse_suites():
    assert parse_suites("facts, identity") == ["facts", "identity"]
    assert parse_suites("all") == list(SUITES)
    with pytest.raises(ValueError, match=r"unknown suite 'tool_use'; choose from facts, reasoning, preference, identity, tools"):
        parse_suites("facts,tool_use")


# --- scoring ---------------------------------------------------------------------------------------

def oracle_replies(style: str):
    """Replies keyed by prompt: every suite's expected answer ("right"), or nothing ("empty")."""
    world = build_world(0)
    right = {}
    for items in (world.questions("sft", "train"), world.questions("sft", "reworded"), world.questions("heldout", "train")):
        right.update({item.prompt: item.answer for item in items})
    right.update({p.prompt: p.reply for p in world.problems("val")})
    right.update({row["chosen"][0]["content"]: "Of course! Here it is. Hope this helps!" for row in dataset_rows("dpo", "val")})
    right.update({row["conversations"][0]["content"]: MINIMIND_IDENTITY["en"] for row in dataset_rows("lora_identity", "val")})
    return (lambda prompt: right[prompt]) if style == "right" else (lambda prompt: "")


def oracle_tool_uses(style: str):
    """tool_replies stand-in: the right value after one usable call ("right"), or no call and nothing ("empty")."""
    from minimind.data.synthetic import NOT_IN_DIRECTORY, stranger_questions
    from minimind.eval.replies import ToolUse
    from minimind.tools import ToolCall

    world = build_world(0)
    right = {p.prompt: str(p.answer) for p in world.problems("val")}
    right.update({item.prompt: item.answer for item in world.questions("heldout", "train")})
    right.update({item.prompt: NOT_IN_DIRECTORY[item.lang].format(name=item.subject)
                  for item in stranger_questions(world, "val", 100)})

    def uses(model, tokenizer, prompts, registry, **kw):
        if style == "empty":
            return [ToolUse([], [], [], "") for _ in prompts]
        return [ToolUse([], [ToolCall("calculator", {"expression": "1"})], [], right[p]) for p in prompts]
    return uses


@pytest.fixture
def replies_from(monkeypatch):
    """Route the suites' generation to a function of the prompt (no model involved)."""
    def install(reply_of, tools="right"):
        monkeypatch.setattr("minimind.eval.replies.answer_questions",
                            lambda model, tokenizer, prompts, max_new_tokens=16, batch_size=64: [reply_of(p) for p in prompts])
        monkeypatch.setattr("minimind.eval.replies.generate_replies",
                            lambda model, tokenizer, prompts, max_new_tokens=96, **kw: [reply_of(p) for p in prompts])
        monkeypatch.setattr("minimind.eval.replies.tool_replies", oracle_tool_uses(tools))
    return install


class NoModel(torch.nn.Module):
    """Stands in for the model when replies come from an oracle."""


def test_perfect_replies_score_one_everywhere_but_the_rejected_style(replies_from):
    replies_from(oracle_replies("right"))
    scores = run_suites(NoModel(), None, list(SUITES), limit=12)
    assert [(s.suite, s.group, s.metric) for s in scores] == [
        ("facts", "trained", "accuracy"), ("facts", "reworded", "accuracy"), ("facts", "heldout", "accuracy"),
        ("reasoning", "add2", "accuracy"), ("reasoning", "add2", "format"), ("reasoning", "add3", "accuracy"),
        ("reasoning", "add3", "format"), ("reasoning", "sub3", "accuracy"), ("reasoning", "sub3", "format"),
        ("preference", "heldout", "polite"), ("preference", "heldout", "curt"), ("identity", "heldout", "minimind"),
        *((("tools", group, metric) for group in ("add2", "add3", "sub3", "heldout", "strangers")
           for metric in ("accuracy", "usable_call")))]
    assert all(s.n == 12 for s in scores)
    assert [s.rate for s in scores] == [1.0] * 10 + [0.0, 1.0] + [1.0] * 10


def test_empty_replies_score_zero_everywhere(replies_from):
    replies_from(oracle_replies("empty"), tools="empty")
    assert all(s.correct == 0 for s in run_suites(NoModel(), None, list(SUITES), limit=5))


def test_full_suites_use_every_held_out_item(replies_from):
    replies_from(oracle_replies("right"))
    sizes = {(s.suite, s.group): s.n for s in run_suites(NoModel(), None, ["facts", "identity", "preference"])}
    world = build_world(0)
    assert sizes[("facts", "heldout")] == len(world.questions("heldout", "train")) == 2400
    assert sizes[("facts", "reworded")] == 600
    assert sizes[("identity", "heldout")] == len(dataset_rows("lora_identity", "val"))
    assert sizes[("preference", "heldout")] == len(dataset_rows("dpo", "val"))


def test_a_real_model_runs_every_suite(book_like_tokenizer):
    torch.manual_seed(0)
    model = MiniMind(get_config("tiny", vocab_size=book_like_tokenizer.vocab_size, max_position_embeddings=2048))
    scores = run_suites(model, book_like_tokenizer, list(SUITES), limit=2)
    assert len(scores) == 22 and all(s.n == 2 and 0 <= s.correct <= 2 for s in scores)
    assert not model.training


@pytest.fixture(scope="module")
def book_like_tokenizer():
    world = build_world(0)
    texts = [item.prompt + " " + item.answer for item in world.questions("sft", "train")[:400]]
    return train_tokenizer(texts, vocab_size=400)
