"""RL with verifiable rewards: advantages, the GRPO / CISPO / PPO losses and their gradients, equality with
TRL's GRPO loss, the reward, the config's refusals, and a tiny end-to-end run."""
import json
import types
from collections import defaultdict
from dataclasses import dataclass

import pytest
import torch

from minimind.train.rl import (RLConfig, Rollout, cispo_token_loss, gae, group_advantages, grpo_token_loss, k3_kl,
                               ppo_value_loss, reward)


def random_batch(seed=0, rows=4, length=6):
    """Per-token log-probs of the policy, the rollout policy and the reference, a mask of unequal lengths."""
    generator = torch.Generator().manual_seed(seed)
    logps = -torch.rand(rows, length, generator=generator) * 3
    old = logps + torch.randn(rows, length, generator=generator) * 0.3  # ratios well outside [0.8, 1.2]
    ref = logps + torch.randn(rows, length, generator=generator) * 0.2
    mask = torch.zeros(rows, length, dtype=torch.bool)
    for row, n in enumerate([6, 2, 4, 5][:rows]):
        mask[row, :n] = True
    advantages = torch.tensor([1.0, -0.5, 2.0, -1.5][:rows])
    return logps, old, ref, mask, advantages


# ---- advantages ---------------------------------------------------------------------------------


def test_group_advantages_are_zero_mean_per_group_and_zero_for_a_flat_group():
    # the flat group's float32 mean is not exactly 0.3: without the explicit zero, dust / (dust + eps) ≠ 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0] + [0.3] * 6 + [0.0, 1.1, 1.1, 0.5, 0.2, 0.0])
    for normalize in (True, False):
        advantages = group_advantages(rewards, 6, normalize_std=normalize).view(3, 6)
        torch.testing.assert_close(advantages.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
        assert advantages[1].eq(0).all()  # all six rewards equal: exactly zero, not float dust
    scaled = group_advantages(rewards, 6).view(3, 6)
    std = (6 * 0.25 / 5) ** 0.5  # the unbiased std, as TRL and upstream MiniMind use
    torch.testing.assert_close(scaled[0], (torch.tensor([1.0, 0, 0, 1, 0, 1]) - 0.5) / (std + 1e-4))
    with pytest.raises(ValueError, match="groups of 5"):
        group_advantages(rewards, 5)


# ---- the GRPO surrogate ------------------------------------------------------------------------------


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_at_ratio_one_the_grpo_gradient_is_reinforce_with_a_baseline(aggregation):
    logps, _, _, mask, advantages = random_batch(1)
    logps.requires_grad_(True)
    loss, stats = grpo_token_loss(logps, logps.detach(), None, advantages, mask, 0.2, 0.2, 0.0, aggregation)
    loss.backward()
    # REINFORCE with a baseline: −A · log π, aggregated the same way
    reinforce_logps = logps.detach().clone().requires_grad_(True)
    per_token = -advantages[:, None] * reinforce_logps
    m = mask.float()
    reinforce = ((per_token * m).sum() / m.sum() if aggregation == "token"
                 else ((per_token * m).sum(1) / m.sum(1)).mean())
    reinforce.backward()
    torch.testing.assert_close(logps.grad, reinforce_logps.grad)
    assert logps.grad[~mask].eq(0).all()
    assert stats["clip_fraction"] == 0 and stats["ratio"] == pytest.approx(1.0)


def test_kl_is_zero_when_policy_equals_reference_and_positive_otherwise():
    logps, _, ref, mask, advantages = random_batch(2)
    assert k3_kl(logps, logps).eq(0).all()
    _, stats = grpo_token_loss(logps, logps, logps.clone(), advantages, mask, kl_coef=0.1)
    assert stats["kl"] == 0
    assert (k3_kl(logps, ref)[mask] > 0).all()
    with_kl, stats = grpo_token_loss(logps, logps, ref, advantages, mask, kl_coef=0.1)
    without, _ = grpo_token_loss(logps, logps, ref, advantages, mask, kl_coef=0.0)
    torch.testing.assert_close(with_kl - without, 0.1 * stats["kl"])  # token aggregation: the same mean


@pytest.mark.parametrize("objective", [grpo_token_loss, cispo_token_loss])
def test_a_group_with_zero_reward_variance_gives_zero_gradient(objective):
    logps, _, _, mask, _ = random_batch(3)
    logps.requires_grad_(True)
    advantages = group_advantages(torch.tensor([0.5, 0.5, 1.0, 0.0]), group_size=2)  # first group flat
    loss, _ = objective(logps, None, None, advantages, mask)  # on-policy: ratio 1, nothing clipped
    loss.backward()
    assert logps.grad[:2].eq(0).all()
    assert logps.grad[2:][mask[2:]].ne(0).all()


def test_clipping_stops_the_gradient_beyond_the_clip_range():
    logps = torch.zeros(1, 4, requires_grad=True)
    # ratios 1.5 and 0.5 (outside [0.8, 1.2]) and 1.1, 0.9 (inside); one advantage sign per pair
    old = -torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.9]]))
    mask = torch.ones(1, 4, dtype=torch.bool)
    for advantage, cut in ((1.0, [True, False, False, False]), (-1.0, [False, True, False, False])):
        logps.grad = None
        loss, stats = grpo_token_loss(logps, old, None, torch.tensor([advantage]), mask, 0.2, 0.2)
        loss.backward()
        assert logps.grad[0, torch.tensor(cut)].eq(0).all()  # beyond the range in the advantage's direction
        assert logps.grad[0, ~torch.tensor(cut)].ne(0).all()  # inside, or clipped in the harmless direction
        assert stats["clip_fraction"].item() == pytest.approx(0.25)
    # CISPO clips the weight, never the gradient: every token still moves
    logps.grad = None
    loss, stats = cispo_token_loss(logps, old, None, torch.tensor([1.0]), mask, 0.2, 0.2)
    loss.backward()
    assert logps.grad.ne(0).all() and stats["clip_fraction"].item() == pytest.approx(0.5)
    torch.testing.assert_close(logps.grad, -torch.tensor([[1.2, 0.8, 1.1, 0.9]]) / 4)


# ---- PPO -----------------------------------------------------------------------------------------


def test_gae_on_a_hand_computed_example():
    # one prompt token (masked out), three reply tokens, the reward 1 at the last; γ = 0.9, λ = 0.5
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[9.0, 0.5, 0.2, 0.4, 7.0]])  # the 9 and the 7 lie off the mask: ignored
    mask = torch.tensor([[False, True, True, True, False]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d3 = 1.0 - 0.4                   # last token: the episode ends, no next value
    d2 = 0.0 + 0.9 * 0.4 - 0.2
    d1 = 0.0 + 0.9 * 0.2 - 0.5
    a3, a2 = d3, d2 + 0.45 * d3
    a1 = d1 + 0.45 * a2
    torch.testing.assert_close(advantages, torch.tensor([[0.0, a1, a2, a3, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[0.0, a1 + 0.5, a2 + 0.2, a3 + 0.4, 0.0]]))
    # λ = 1, γ = 1: every reply token's return is the final reward
    _, mc = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(mc[mask], torch.ones(3))


def test_value_loss_is_clipped_around_the_rollout_values():
    values = torch.tensor([[1.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss = ppo_value_loss(values, old, returns, torch.ones(1, 2, dtype=torch.bool), clip=0.2)
    loss.backward()
    # token 1 moved past the clip: the larger, clipped error (2 − 0.2)² wins and carries no gradient
    torch.testing.assert_close(loss, torch.tensor((0.5 * 1.8 ** 2 + 0.5 * 1.0) / 2))
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.5]]))


def test_whitened_ppo_advantages_have_zero_mean_and_unit_std_on_the_mask():
    from minimind.train.rl import whiten

    x = torch.tensor([[5.0, 1.0, 2.0, 100.0], [3.0, 4.0, -50.0, -50.0]])
    mask = torch.tensor([[False, True, True, False], [True, True, False, False]])
    white = whiten(x, mask)
    assert white[~mask].eq(0).all()
    torch.testing.assert_close(white[mask].mean(), torch.tensor(0.0))
    torch.testing.assert_close(white[mask].pow(2).mean(), torch.tensor(1.0), rtol=1e-4, atol=0)


# ---- equality with TRL 1.16's GRPOTrainer._compute_loss ---------------------------------------------
# The trainer object is built without its constructor and given exactly the attributes that method reads;
# its per-token log-prob function is replaced by one returning our tensor, so TRL's own code computes the
# ratio, clipping, KL and aggregation from the same log-probs, and both gradients reach the same leaf.


class _OneProcess:
    num_processes = 1
    sync_gradients = True

    def gather(self, tensor):
        return tensor

    def reduce(self, tensor, reduction="sum"):
        return tensor


def _trl_grpo_loss(logps, old, ref, advantages, mask, loss_type, eps_low, eps_high, beta):
    from trl import GRPOTrainer

    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.__dict__.update(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        loss_type=loss_type, epsilon_low=eps_low, epsilon_high=eps_high, use_vllm=False,
        model=types.SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        accelerator=_OneProcess(), _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _entropy_bonus_enabled=False, aux_loss_enabled=False,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
    )
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logps, torch.zeros_like(logps), None)
    rows, length = mask.shape
    inputs = dict(prompt_ids=torch.ones(rows, 2, dtype=torch.long), prompt_mask=torch.ones(rows, 2),
                  completion_ids=torch.ones(rows, length, dtype=torch.long), completion_mask=mask.float(),
                  advantages=advantages, old_per_token_logps=old, ref_per_token_logps=ref,
                  num_items_in_batch=mask.sum().float())
    return trainer._compute_loss(None, inputs), trainer._metrics["train"]


@pytest.mark.parametrize("ours, theirs", [
    (("grpo", "sequence"), "grpo"),   # GRPO paper: each completion's mean, then the mean of completions
    (("grpo", "token"), "bnpo"),      # every token of the batch weighs the same
    (("grpo", "token"), "dapo"),      # the same, normalised by the batch's token count
    (("cispo", "token"), "cispo"),
])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_equal_trl(ours, theirs, beta):
    algorithm, aggregation = ours
    logps, old, ref, mask, advantages = random_batch(4)
    mine_leaf = logps.clone().requires_grad_(True)
    trl_leaf = logps.clone().requires_grad_(True)
    if algorithm == "cispo":  # TRL's CISPO bounds the weight above only, by epsilon_high itself
        mine, stats = cispo_token_loss(mine_leaf, old, ref, advantages, mask, 1.0, 0.3, beta, aggregation)
        trl, metrics = _trl_grpo_loss(trl_leaf, old, ref, advantages, mask, "cispo", 0.2, 1.3, beta)
    else:
        mine, stats = grpo_token_loss(mine_leaf, old, ref, advantages, mask, 0.2, 0.28, beta, aggregation)
        trl, metrics = _trl_grpo_loss(trl_leaf, old, ref, advantages, mask, theirs, 0.2, 0.28, beta)
        assert stats["clip_fraction"].item() == pytest.approx(metrics["clip_ratio/region_mean"][-1])
        assert 0 < stats["clip_fraction"] < 1  # the batch does exercise the clip
    torch.testing.assert_close(mine, trl)
    mine.backward(), trl.backward()
    torch.testing.assert_close(mine_leaf.grad, trl_leaf.grad)
    if beta:
        assert stats["kl"].item() == pytest.approx(metrics["kl"][-1])


# ---- the reward and the config -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sum:
    prompt: str
    answer: int


def test_reward_is_the_verifier_plus_format_and_length_terms():
    problem = Sum("What is 2 + 3?", 5)
    good, wrong = "<think>\n2+3=5\n</think>\n<answer>5</answer>", "<think>\nhm\n</think>\n<answer>6</answer>"
    sloppy = "the answer is <answer>5</answer> I think"  # right, but not in the format
    assert reward(good, problem) == 1.0 and reward(wrong, problem) == 0.0 and reward(sloppy, problem) == 1.0
    assert reward(good, problem, format_reward=0.1) == pytest.approx(1.1)
    assert reward(wrong, problem, format_reward=0.1) == pytest.approx(0.1)
    assert reward(sloppy, problem, format_reward=0.1) == 1.0
    assert reward(sloppy, problem, format_reward=-0.5) == 0.5  # a penalty for the malformed instead
    assert reward(good, problem, length_penalty=0.2, length_fraction=0.5) == pytest.approx(0.9)


@pytest.mark.parametrize("changes, message", [
    (dict(group_size=1), "group_size must be at least 2"),
    (dict(algorithm="cispo", group_size=1), "group_size must be at least 2"),
    (dict(algorithm="reinforce"), "algorithm must be one of"),
    (dict(loss_aggregation="batch"), "loss_aggregation must be one of"),
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(clip_low=1.0), "clip_low < 1"),
    (dict(clip_low=1.5, algorithm="cispo"), "<= 1 for cispo"),
    (dict(kl_coef=-0.1), "kl_coef must not be negative"),
    (dict(gae_lambda=1.5), "gae_lambda must lie in"),
    (dict(ppo_epochs=0), "ppo_epochs must be at least 1"),
    (dict(resume=True, out_dir=""), "--resume continues the run in --out_dir"),
])
def test_bad_config_is_refused_with_a_clear_message(changes, message):
    with pytest.raises(ValueError, match=message):
        RLConfig(**changes)
    RLConfig(algorithm="ppo", group_size=1)  # PPO needs no group


def test_cispo_may_leave_its_weight_unbounded_below():
    assert RLConfig(algorithm="cispo", clip_low=1.0, clip_high=4.0, out_dir="").clip_low == 1.0


def test_no_prompts_is_refused(tokenizer):
    from minimind.train import rl

    with pytest.raises(ValueError, match="no prompts"):
        rl.run(RLConfig(out_dir="", progress=False, device="cpu"), model=tiny_model(tokenizer), tokenizer=tokenizer,
               problems=[])


# ---- on a model ------------------------------------------------------------------------------------------


PROBLEMS = [Sum("What is 2 + 3?", 5), Sum("What is 4 + 4?", 8), Sum("What is 7 - 2?", 5)]


@pytest.fixture(scope="module")
def tokenizer():
    from minimind.tokenizer import train_tokenizer

    texts = [p.prompt for p in PROBLEMS] + ["<think>\n2+3=5\n</think>\n<answer>5</answer>"] * 3
    return train_tokenizer(texts, vocab_size=300)


def tiny_model(tokenizer, seed=0):
    from minimind.config import get_config
    from minimind.model import MiniMind

    torch.manual_seed(seed)
    return MiniMind(get_config("tiny", vocab_size=tokenizer.vocab_size))


def test_one_update_raises_the_rewarded_reply_and_lowers_the_other(tokenizer):
    from minimind.train.rl import _Trainer, token_logps

    model = tiny_model(tokenizer)
    rollout = handmade_rollout(tokenizer, ["<answer>5</answer>", "<answer>6</answer>"], [1.0, 0.0])
    ids, mask = rollout.input_ids, rollout.mask
    config = RLConfig(group_size=2, lr=1e-3, device="cpu", out_dir="")
    digit = int((ids[0] != ids[1]).nonzero()[0])  # the replies share their context up to the answer's digit
    before = token_logps(model, ids, mask)[0][:, digit].detach()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    record = _Trainer(config, model, None, None, optimizer, torch.device("cpu"), torch.float32).step(rollout, 1e-3, 0)
    after = token_logps(model, ids, mask)[0][:, digit].detach()
    assert after[0] > before[0] and after[1] < before[1]  # log π(5 | …) up, log π(6 | …) down
    assert record["zero_variance_groups"] == 0.0 and record["accuracy"] == 0.5


def handmade_rollout(tokenizer, replies, rewards):
    """A rollout of the given reply texts to PROBLEMS[0], right-padded as sample_rollout lays them out."""
    prompt = tokenizer.encode_chat_prompt([{"role": "user", "content": PROBLEMS[0].prompt}])
    replies = [tokenizer.encode(text) for text in replies]
    width = len(prompt) + max(map(len, replies))
    ids = torch.zeros(len(replies), width, dtype=torch.long)
    mask = torch.zeros(len(replies), width, dtype=torch.bool)
    for row, reply in enumerate(replies):
        ids[row, :len(prompt) + len(reply)] = torch.tensor(prompt + reply)
        mask[row, len(prompt):len(prompt) + len(reply)] = True
    n = len(replies)
    return Rollout(ids, mask, torch.tensor(rewards), torch.tensor(rewards) > 0, torch.ones(n, dtype=torch.bool),
                   torch.ones(n, dtype=torch.bool), [""] * n)


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_an_update_in_chunks_equals_the_update_on_the_whole_batch(tokenizer, aggregation, algorithm):
    from minimind.train.rl import ValueHead, _Trainer

    rollout = handmade_rollout(tokenizer, ["<answer>5</answer>", "<answer>6</answer> 6 6", "<think>\n</think>",
                                           "<answer>5 5</answer>"], [1.0, 0.0, 0.1, 1.0])
    results = []
    for batch_size in (4, 1):  # one forward pass, or four whose losses are weighted by their share
        model = tiny_model(tokenizer)
        head = ValueHead(model.config.hidden_size) if algorithm == "ppo" else None
        torch.nn.init.normal_(head.linear.weight) if head is not None else None
        params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
        config = RLConfig(algorithm=algorithm, group_size=2, loss_aggregation=aggregation, batch_size=batch_size,
                          grad_clip=0.0, kl_coef=0.1, device="cpu", out_dir="")
        trainer = _Trainer(config, model, tiny_model(tokenizer, seed=1).eval(), head, torch.optim.SGD(params, lr=0.1),
                           torch.device("cpu"), torch.float32)
        record = trainer.step(rollout, 0.1, 0)
        results.append((record, torch.cat([p.detach().flatten() for p in params])))
    (whole, weights_whole), (chunked, weights_chunked) = results
    for name in ("loss", "kl", "clip_fraction", "entropy", *(("value_loss",) if algorithm == "ppo" else ())):
        assert chunked[name] == pytest.approx(whole[name], rel=1e-4, abs=1e-6), name
    torch.testing.assert_close(weights_chunked, weights_whole, rtol=1e-4, atol=1e-6)


def test_a_rollout_trains_the_end_token_of_a_finished_reply_and_scores_with_the_verifier(tokenizer, monkeypatch):
    import minimind.generate
    from minimind.tokenizer import EOS_ID
    from minimind.train.rl import sample_rollout

    right, cut = tokenizer.encode("<answer>5</answer>"), tokenizer.encode("<answer>5 5 5 5 5 5 5</answer>")[:6]
    monkeypatch.setattr(minimind.generate, "generate_batch", lambda model, prompts, params, **kw: [right, cut])
    config = RLConfig(group_size=2, max_new_tokens=6, format_reward=-0.5, device="cpu", out_dir="")
    rollout = sample_rollout(tiny_model(tokenizer), tokenizer, PROBLEMS[:1], config, seed=0)
    prompt = tokenizer.encode_chat_prompt([{"role": "user", "content": PROBLEMS[0].prompt}])
    # the finished reply ends on its end token (the policy chose to stop: trained too); the cut one does not
    assert rollout.mask.sum(-1).tolist() == [len(right) + 1, 6] and rollout.finished.tolist() == [True, False]
    assert rollout.input_ids[0, :len(prompt)].tolist() == prompt
    assert rollout.input_ids[0][rollout.mask[0]].tolist() == right + [EOS_ID]
    assert rollout.input_ids[1][rollout.mask[1]].tolist() == cut
    assert rollout.correct.tolist() == [True, False]  # the cut reply never closed its answer block
    # an answer-only reply is not in the reasoning format: charged the format penalty
    torch.testing.assert_close(rollout.rewards, torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize("algorithm, changes", [
    ("grpo", dict(kl_coef=0.05, ppo_epochs=2)),
    ("cispo", dict(loss_aggregation="sequence")),
    ("ppo", dict(ppo_epochs=2)),
])
def test_two_rl_steps_write_a_loadable_checkpoint_and_metrics(tmp_path, tokenizer, algorithm, changes):
    from minimind.checkpoint import load_model, save_model
    from minimind.train import rl

    start = tmp_path / "start"

    save_model(tiny_model(tokenizer), start)
    tokenizer.save(start)
    out = tmp_path / "out"
    argv = ["--init_from", str(start), "--out_dir", str(out), "--algorithm", algorithm, "--group_size", "2",
            "--prompts_per_step", "2", "--max_new_tokens", "6", "--max_steps", "2", "--batch_size", "3",
            "--progress", "false", "--device", "cpu", "--lr", "1e-3"]
    for name, value in changes.items():
        argv += [f"--{name}", str(value)]
    config = rl.parse_config(rl.RLConfig, argv)
    result = rl.run(config, problems=PROBLEMS)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and result.records == records
    expected = {"loss", "lr", "grad_norm", "reward", "accuracy", "format_rate", "clip_fraction", "entropy",
                "zero_variance_groups", "response_len", "tokens"}
    assert expected <= set(records[0])
    assert ("kl" in records[0]) == (config.kl_coef > 0) and ("value_loss" in records[0]) == (algorithm == "ppo")
    assert all(0 < r["response_len"] <= 6 and r["entropy"] > 0 for r in records)
    trained = load_model(out)
    assert trained.config.vocab_size == tokenizer.vocab_size
    assert json.loads((out / "train_config.json").read_text())["algorithm"] == algorithm
    assert (out / rl.VALUE_HEAD_FILE).exists() == (algorithm == "ppo")
    with pytest.raises(ValueError, match="already holds a training run"):
        rl.run(config, problems=PROBLEMS)


def test_cli_lists_the_rl_stage(capsys):
    from minimind import cli

    assert "rl" in cli.STAGES
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "rl", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--group_size" in help_text and "--loss_aggregation" in help_text


# ---- resume ----------------------------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def rl_argv(start, out, *extra):
    return ["--init_from", str(start), "--out_dir", str(out), "--group_size", "2", "--prompts_per_step", "2",
            "--max_new_tokens", "6", "--max_steps", "4", "--save_interval", "2", "--length_penalty", "0.5",
            "--progress", "false", "--device", "cpu", "--lr", "1e-3", *extra]


@pytest.fixture(scope="module")
def start_model(tmp_path_factory, tokenizer):
    from minimind.checkpoint import save_model

    start = tmp_path_factory.mktemp("rl_start") / "start"
    save_model(tiny_model(tokenizer), start)
    tokenizer.save(start)
    return start


def coin_verifier(reply, problem):
    """A stand-in verifier for an untrained model (which is never right): "correct" when the
    reply's characters sum to an even number, so the replies of a group get unequal rewards."""
    return sum(map(ord, reply)) % 2 == 0, True


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(tmp_path, start_model, algorithm, monkeypatch):
    from minimind.checkpoint import load_model
    from minimind.train import rl

    monkeypatch.setattr(rl, "verify", coin_verifier)
    argv = ("--algorithm", algorithm, "--kl_coef", "0.05")
    whole = rl.run(rl.parse_config(rl.RLConfig, rl_argv(start_model, tmp_path / "whole", *argv)), problems=PROBLEMS)

    def crash_after_step_3(info):
        if info.step == 3:
            raise Interrupted("simulated crash")

    with pytest.raises(Interrupted):  # the checkpoint of step 2 survives
        rl.run(rl.parse_config(rl.RLConfig, rl_argv(start_model, tmp_path / "cut", *argv)), problems=PROBLEMS,
               callbacks=[crash_after_step_3])
    resumed = rl.run(rl.parse_config(rl.RLConfig, rl_argv(start_model, tmp_path / "cut", *argv, "--resume")),
                     problems=PROBLEMS)
    for a, b in zip(load_model(tmp_path / "whole").state_dict().values(),
                    load_model(tmp_path / "cut").state_dict().values()):
        assert torch.equal(a, b)
    if algorithm == "ppo":
        from safetensors.torch import load_file

        assert load_file(tmp_path / "whole" / rl.VALUE_HEAD_FILE).keys() == load_file(
            tmp_path / "cut" / rl.VALUE_HEAD_FILE).keys()
    assert [r["step"] for r in resumed.records] == [1, 2, 3, 4]  # the lost step 3 is logged once, by the resumed run
    for key in ("loss", "reward", "kl", "response_len"):
        assert [r[key] for r in resumed.records] == [r[key] for r in whole.records], key
    assert whole.records[-1]["loss"] != whole.records[0]["loss"]


def test_resume_refuses_another_layout(tmp_path, start_model):
    from minimind.train import rl

    rl.run(rl.parse_config(rl.RLConfig, rl_argv(start_model, tmp_path / "run")), problems=PROBLEMS)
    changed = rl_argv(start_model, tmp_path / "run", "--resume")
    changed[changed.index("--group_size") + 1] = "3"
    with pytest.raises(ValueError, match="saved with group_size 2, now 3"):
        rl.run(rl.parse_config(rl.RLConfig, changed), problems=PROBLEMS)
    ppo = rl_argv(start_model, tmp_path / "run", "--resume", "--algorithm", "ppo")
    with pytest.raises(ValueError, match="without a value head"):
        rl.run(rl.parse_config(rl.RLConfig, ppo), problems=PROBLEMS)


def test_the_prompt_stream_is_a_fresh_permutation_every_pass():
    from minimind.train.rl import prompt_indices

    stream = prompt_indices(3, 5, 0, 15)
    assert [sorted(stream[i:i + 5]) for i in (0, 5, 10)] == [list(range(5))] * 3
    assert stream[:5] != stream[5:10]
    assert prompt_indices(3, 5, 7, 4) == stream[7:11]  # any step's prompts, without the steps before


# ---- two processes ---------------------------------------------------------------------------------------


def test_two_processes_with_half_the_prompts_each_follow_one_process(tmp_path, start_model):
    """torchrun --nproc_per_node 2: each process samples and trains on 2 of the step's 4 prompts
    (the world's first 8 training problems); the replies, rewards and the update equal one process's."""
    import inspect
    import os
    import subprocess
    import sys

    from minimind.checkpoint import load_model
    from minimind.train import read_metrics

    script = tmp_path / "rl_with_coin_verifier.py"
    script.write_text(inspect.getsource(coin_verifier) + "\nimport sys\nfrom minimind.train import rl\n"
                      "rl.verify = coin_verifier\nraise SystemExit(rl.main(sys.argv[1:]))\n")
    argv = [str(script), *rl_argv(start_model, "OUT", "--max_prompts", "8", "--algorithm", "grpo",
                                                 "--kl_coef", "0.05")]
    argv[argv.index("--prompts_per_step") + 1] = "4"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(prefix, out):
        command = [sys.executable, *prefix, *[str(out) if a == "OUT" else a for a in argv]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    launch([], tmp_path / "one")
    done = launch(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], tmp_path / "two")
    assert done.stdout.count("RL (grpo) done") == 1  # rank 0 reports and writes
    one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2, 3, 4]
    for key in ("accuracy", "response_len", "zero_variance_groups", "tokens"):
        assert [r[key] for r in two] == [r[key] for r in one], key  # the same replies were sampled
    for key in ("reward", "loss", "kl", "entropy", "clip_fraction", "grad_norm"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4, abs=1e-6), key
    for a, b in zip(load_model(tmp_path / "one").parameters(), load_model(tmp_path / "two").parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5)
    from minimind.train.state import load_resume_state

    assert load_resume_state(tmp_path / "two" / "resume.pt")["world_size"] == 2


def test_a_step_that_does_not_split_over_the_processes_is_refused(monkeypatch, tokenizer):
    from minimind import runtime
    from minimind.train import rl

    monkeypatch.setattr(runtime, "init_distributed", lambda device: runtime.Distributed(rank=0, world_size=2))
    with pytest.raises(ValueError, match="does not split over 2 processes"):
        rl.run(RLConfig(out_dir="", prompts_per_step=3, progress=False, device="cpu"),
               model=tiny_model(tokenizer), tokenizer=tokenizer, problems=PROBLEMS)
