"""Reasoning training: the tag-weighted loss, the reply parser and scorer."""
import pytest
import torch
import torch.nn.functional as F

from minimind.losses import masked_cross_entropy, reasoning_weighted_loss
from minimind.scoring import parse_reasoning, score_answers

VOCAB = 29
TAG_IDS = (3, 4, 5, 6)  # <think> </think> <answer> </answer>


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 10, VOCAB, generator=gen)
    labels = torch.randint(7, VOCAB, (2, 10), generator=gen)
    labels[:, :3] = -100  # prompt
    labels[0, 3], labels[0, 6], labels[0, 7], labels[0, 9] = 3, 4, 5, 6  # a reply with its four tags
    labels[1, 8:] = -100  # padding
    return logits, labels


@pytest.mark.parametrize("normalize", ["weighted", "tokens"])
def test_weight_one_equals_plain_cross_entropy(normalize):
    logits, labels = _batch()
    loss = reasoning_weighted_loss(logits, labels, TAG_IDS, tag_weight=1.0, normalize=normalize)
    torch.testing.assert_close(loss, masked_cross_entropy(logits, labels))


def _per_position_gradient_scale(labels, logits, weight, normalize):
    logits = logits.clone().requires_grad_(True)
    reasoning_weighted_loss(logits, labels, TAG_IDS, tag_weight=weight, normalize=normalize).backward()
    return logits.grad.norm(dim=-1)  # (B, T): how strongly each position is pushed


@pytest.mark.parametrize("normalize", ["weighted", "tokens"])
def test_only_tag_positions_get_the_weight(normalize):
    logits, labels = _batch()
    plain = _per_position_gradient_scale(labels, logits, 1.0, normalize)
    weighted = _per_position_gradient_scale(labels, logits, 10.0, normalize)
    # Position t-1 predicts labels[t]; compare the gradient ratio position by position.
    predicts_tag = torch.zeros_like(labels, dtype=torch.bool)
    predicts_tag[:, :-1] = torch.isin(labels[:, 1:], torch.tensor(TAG_IDS))
    supervised = torch.zeros_like(predicts_tag)
    supervised[:, :-1] = labels[:, 1:] != -100
    ratio = weighted / plain.clamp_min(1e-12)
    tag_ratio = ratio[predicts_tag]
    other_ratio = ratio[supervised & ~predicts_tag]
    # Every tag position moves by the same factor, every other supervised one by another,
    # and the two factors differ by exactly the weight.
    torch.testing.assert_close(tag_ratio, tag_ratio[0].expand_as(tag_ratio))
    torch.testing.assert_close(other_ratio, other_ratio[0].expand_as(other_ratio))
    torch.testing.assert_close(tag_ratio[0] / other_ratio[0], torch.tensor(10.0))
    assert weighted[~supervised].abs().max().item() == 0.0


def test_weighting_ids_that_never_occur_as_targets_changes_nothing():
    logits, labels = _batch()
    torch.testing.assert_close(
        reasoning_weighted_loss(logits, labels, (VOCAB + 5,), tag_weight=10.0),
        masked_cross_entropy(logits, labels),
    )


def test_weighted_normalisation_is_a_weighted_mean_and_tokens_is_upstreams():
    logits, labels = _batch()
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), targets.reshape(-1), reduction="none", ignore_index=-100)
    ce = ce.view_as(targets)
    supervised = targets != -100
    weight = torch.where(torch.isin(targets, torch.tensor(TAG_IDS)), 10.0, 1.0) * supervised
    torch.testing.assert_close(
        reasoning_weighted_loss(logits, labels, TAG_IDS, 10.0, "weighted"), (ce * weight).sum() / weight.sum()
    )
    # Upstream MiniMind2: weighted sum over the *unweighted* token count.
    torch.testing.assert_close(
        reasoning_weighted_loss(logits, labels, TAG_IDS, 10.0, "tokens"), (ce * weight).sum() / supervised.sum()
    )


def test_bad_arguments_are_rejected():
    logits, labels = _batch()
    with pytest.raises(ValueError, match="normalize"):
        reasoning_weighted_loss(logits, labels, TAG_IDS, normalize="mean")
    with pytest.raises(ValueError, match="tag_weight"):
        reasoning_weighted_loss(logits, labels, TAG_IDS, tag_weight=-1.0)
    with pytest.raises(ValueError, match="disagree"):
        reasoning_weighted_loss(logits, labels[:, :-1], TAG_IDS)


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("<think>7+7=14</think><answer>14</answer>", ("7+7=14", "14", True)),
        ("  <think>\n a \n</think>\n<answer> 14 </answer>\n", ("a", "14", True)),
        ("<think></think><answer>5</answer>", ("", "5", True)),
        ("<answer>14</answer>", (None, "14", False)),  # no think block
        ("<think>x</think>", ("x", None, False)),  # no answer
        ("<think>x</think><answer>14", ("x", None, False)),  # answer never closed
        ("<answer>14</answer><think>x</think>", ("x", "14", False)),  # wrong order
        ("so <think>x</think><answer>14</answer>", ("x", "14", False)),  # text before the think block
        ("<think>x</think><answer>14</answer> and more", ("x", "14", False)),  # text after
        ("<think>x</think><answer>1</answer><answer>2</answer>", ("x", "1", False)),  # two answers
        ("<think>x<think>y</think><answer>3</answer>", ("x<think>y", "3", False)),  # tag repeated
        ("14", (None, None, False)),
        ("", (None, None, False)),
    ],
)
def test_parse_reasoning_on_crafted_replies(reply, expected):
    assert parse_reasoning(reply) == expected


def test_direct_answers_are_well_formed_only_when_think_is_not_required():
    assert parse_reasoning("<answer>14</answer>", require_think=False) == (None, "14", True)
    assert parse_reasoning("<think>a</think><answer>14</answer>", require_think=False)[2] is True
    assert parse_reasoning("<answer>1</answer><answer>2</answer>", require_think=False)[2] is False
    assert parse_reasoning("<think>a</think>", require_think=False)[2] is False


def test_score_answers_counts_format_and_accuracy_separately():
    replies = [
        "<think>2+2=4</think><answer>4</answer>",  # well formed, right
        "<think>2+3=6</think><answer>6</answer>",  # well formed, wrong
        "<answer>7</answer>",  # malformed, right
        "<think>no answer</think>",  # malformed, nothing to grade
        "<think>x</think><answer> Paris </answer>",  # right up to whitespace and case
    ]
    references = ["4", "5", "7", "1", "paris"]
    score = score_answers(replies, references)
    assert (score.n, score.well_formed, score.correct) == (5, 3, 3)
    assert score.format_rate == pytest.approx(0.6) and score.accuracy == pytest.approx(0.6)
    strict = score_answers(replies, references, require_format=True)
    assert strict.correct == 2
    direct = score_answers(replies, references, require_think=False)
    assert direct.well_formed == 4
    with pytest.raises(ValueError, match="references"):
        score_answers(replies, references[:2])
    assert score_answers([], []).accuracy == 0.0


# ---------------------------------------------------------------------------------------------
# Masks through the real data path, the stage's loss function, and the script end to end.

REASONING_CHATS = [
    [{"role": "user", "content": f"What is {a} + {b}?"},
     {"role": "assistant", "content": f"<think>{a}+{b}={a + b}</think><answer>{a + b}</answer>"}]
    for a, b in [(12, 7), (30, 45), (8, 9), (61, 22), (5, 5), (40, 13), (27, 27), (3, 90)]
]


@pytest.fixture(scope="module")
def tokenizer():
    from minimind.tokenizer import train_tokenizer

    texts = [m["content"] for chat in REASONING_CHATS for m in chat] * 4
    return train_tokenizer(texts, vocab_size=300)


def _write_jsonl(path, chats):
    import json

    path.write_text("".join(json.dumps({"conversations": c}) + "\n" for c in chats), encoding="utf-8")
    return path


def test_reasoning_masks_cover_only_the_assistant_reply_and_tags_are_single_targets(tokenizer, tmp_path):
    from minimind.data.datasets import SFTDataset

    dataset = SFTDataset(_write_jsonl(tmp_path / "reason.jsonl", REASONING_CHATS), tokenizer, max_seq_len=128)
    tag_ids = tokenizer.reasoning_tag_ids
    assert tag_ids == [3, 4, 5, 6]
    for index, chat in enumerate(REASONING_CHATS):
        example = dataset[index]
        ids, labels = example["input_ids"], example["labels"]
        supervised = labels != -100
        # The supervised tokens decode to exactly the reply and its closing <|im_end|>\n.
        assert tokenizer.decode(ids[supervised].tolist()) == chat[1]["content"] + "<|im_end|>\n"
        # Every tag in the sequence is supervised, appears once, and as one token.
        for tag in tag_ids:
            positions = (ids == tag).nonzero().flatten().tolist()
            assert len(positions) == 1 and bool(supervised[positions[0]])
        # The prompt (system + user + assistant header) is not.
        first = int(supervised.nonzero()[0])
        assert tokenizer.decode(ids[:first].tolist()).endswith("<|im_start|>assistant\n")


def test_reasoning_loss_fn_with_weight_one_is_the_plain_lm_loss(tokenizer, tmp_path):
    from minimind.config import get_config
    from minimind.data.datasets import SFTDataset, collate_causal_lm
    from minimind.model import MiniMind
    from minimind.train import causal_lm_loss
    from minimind.train.reason import reasoning_loss_fn

    torch.manual_seed(0)
    model = MiniMind(get_config("tiny", vocab_size=tokenizer.vocab_size))
    dataset = SFTDataset(_write_jsonl(tmp_path / "reason.jsonl", REASONING_CHATS), tokenizer, max_seq_len=128)
    batch = collate_causal_lm([dataset[i] for i in range(4)])
    plain, _ = causal_lm_loss(model, batch)
    weighted_one, metrics = reasoning_loss_fn(tokenizer.reasoning_tag_ids, 1.0)(model, batch)
    torch.testing.assert_close(weighted_one, plain)
    weighted_ten, metrics_ten = reasoning_loss_fn(tokenizer.reasoning_tag_ids, 10.0)(model, batch)
    torch.testing.assert_close(metrics_ten["ce"], plain.detach())  # the logged CE ignores the weight
    # A fresh model is as unsure of tags as of anything: the weighted mean moves toward the tag loss.
    expected_direction = torch.sign(metrics["tag_ce"] - plain)
    assert torch.sign(weighted_ten - plain) == expected_direction


def test_reasoning_loss_fn_equals_the_weighted_loss_on_every_logit(tokenizer, tmp_path):
    # the training step computes logits only at supervised positions; the loss and its
    # gradient must be those of `reasoning_weighted_loss` on the full (B, T, V) logits
    from minimind.config import get_config
    from minimind.data.datasets import SFTDataset, collate_causal_lm
    from minimind.model import MiniMind
    from minimind.train.reason import reasoning_loss_fn

    torch.manual_seed(0)
    model = MiniMind(get_config("tiny", vocab_size=tokenizer.vocab_size))
    dataset = SFTDataset(_write_jsonl(tmp_path / "reason.jsonl", REASONING_CHATS), tokenizer, max_seq_len=128)
    batch = collate_causal_lm([dataset[i] for i in range(4)])
    tags = tokenizer.reasoning_tag_ids
    for normalize in ("weighted", "tokens"):
        model.zero_grad()
        expected = reasoning_weighted_loss(model(batch["input_ids"]).logits, batch["labels"], tags, 10.0, normalize)
        expected.backward()
        want = {name: p.grad.clone() for name, p in model.named_parameters()}
        model.zero_grad()
        loss, metrics = reasoning_loss_fn(tags, 10.0, normalize)(model, batch)
        loss.backward()
        torch.testing.assert_close(loss, expected)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, want[name], msg=name)
    with torch.no_grad():
        logits = model(batch["input_ids"]).logits
        targets = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=-100)
        tag_targets = torch.where(torch.isin(targets, torch.tensor(tags)), targets, -100)
    torch.testing.assert_close(metrics["tag_ce"], masked_cross_entropy(logits, torch.nn.functional.pad(
        tag_targets[:, :-1], (1, 0), value=-100)))


def test_reason_script_trains_and_saves_from_the_command_line(tokenizer, tmp_path):
    import json

    from minimind.checkpoint import load_model, save_model
    from minimind.config import get_config
    from minimind.model import MiniMind
    from minimind.train import reason

    torch.manual_seed(0)
    start = tmp_path / "start"
    save_model(MiniMind(get_config("tiny", vocab_size=tokenizer.vocab_size)), start)
    tokenizer.save(start)
    data = _write_jsonl(tmp_path / "reason.jsonl", REASONING_CHATS)
    out = tmp_path / "out"
    argv = ["--init_from", str(start), "--data_path", str(data), "--out_dir", str(out), "--max_steps", "3",
            "--batch_size", "4", "--tag_weight", "5", "--progress", "false", "--log_interval", "1"]
    assert reason.main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {"ce", "tag_ce", "loss"} <= set(records[0])
    trained = load_model(out)
    assert trained.config.vocab_size == tokenizer.vocab_size
    assert json.loads((out / "train_config.json").read_text())["tag_weight"] == 5.0


def test_reason_help_lists_the_stage_options(capsys):
    from minimind.train import reason

    with pytest.raises(SystemExit) as exit_info:
        reason.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--tag_weight" in help_text and "--loss_normalize" in help_text


def test_generate_replies_with_a_thinking_budget_closes_the_think_block_in_time(tokenizer):
    from minimind.config import get_config
    from minimind.model import MiniMind
    from minimind.eval.replies import generate_replies

    torch.manual_seed(0)
    model = MiniMind(get_config("tiny", vocab_size=tokenizer.vocab_size))  # untrained: never closes on its own
    prompts = [chat[0]["content"] for chat in REASONING_CHATS[:3]]
    free = generate_replies(model, tokenizer, prompts, max_new_tokens=12, open_thinking=True)
    capped = generate_replies(model, tokenizer, prompts, max_new_tokens=12, open_thinking=True, thinking_budget=3)
    for reply_free, reply_capped in zip(free, capped):
        assert reply_free.startswith("<think>\n") and reply_capped.startswith("<think>\n")
        assert "</think>" not in reply_free
        # Three free tokens inside the block, then the forced </think>.
        ids = tokenizer.encode(reply_capped[len("<think>\n"):])
        assert tokenizer.reasoning_tag_ids[1] in ids[:4]
    assert model.training  # restored after generating
    with pytest.raises(ValueError, match="open_thinking"):
        generate_replies(model, tokenizer, prompts, thinking_budget=3)


def test_checks_accept_the_reference_and_reject_upstreams_normalisation(capsys):
    from minimind.checks.reasoning import check_parse_reasoning, check_reasoning_weighted_loss

    check_reasoning_weighted_loss(lambda logits, labels, tags, weight: reasoning_weighted_loss(logits, labels, tags, weight))
    check_parse_reasoning(parse_reasoning)
    assert capsys.readouterr().out.count("✓") == 2
    with pytest.raises(AssertionError, match="sum of the weights"):
        check_reasoning_weighted_loss(
            lambda logits, labels, tags, weight: reasoning_weighted_loss(logits, labels, tags, weight, "tokens"))
    with pytest.raises(AssertionError, match="well_formed"):
        # a parser that only checks that both blocks are closed, not their order or what surrounds them
        check_parse_reasoning(lambda text: (*parse_reasoning(text)[:2], "</think>" in text and "</answer>" in text))
