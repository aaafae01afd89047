"""The chapter 12 self-checks accept the reference solutions and reject typical mistakes."""
import pytest
import torch

from minimind.checks import rl as checks
from minimind.train.rl import group_advantages, grpo_token_loss


def test_checks_accept_the_reference_solutions(capsys):
    checks.check_group_advantages(group_advantages)
    checks.check_grpo_loss(lambda logps, old, adv, mask, eps: grpo_token_loss(logps, old, None, adv, mask, eps, eps)[0])
    assert capsys.readouterr().out.count("✓") == 2


def batch_mean_advantages(rewards, group):
    return (rewards - rewards.mean()) / (rewards.std() + 1e-4)


def biased_std_advantages(rewards, group):
    grouped = rewards.view(-1, group)
    centred = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, unbiased=False, keepdim=True) + 1e-4)
    return centred.masked_fill(grouped.std(1, keepdim=True) == 0, 0).view(-1)


@pytest.mark.parametrize("wrong, message", [
    (batch_mean_advantages, "exactly 0|own mean"),
    (biased_std_advantages, "unbiased std"),
])
def test_advantage_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_group_advantages(wrong)


def unclipped(logps, old, adv, mask, eps):
    return -(torch.exp(logps - old) * adv[:, None] * mask).sum() / mask.sum()


def sequence_mean(logps, old, adv, mask, eps):
    return grpo_token_loss(logps, old, None, adv, mask, eps, eps, aggregation="sequence")[0]


def detached_ratio(logps, old, adv, mask, eps):
    ratio = torch.exp(logps.detach() - old)  # the value is right, the gradient is REINFORCE's everywhere
    per_token = -torch.min(ratio * adv[:, None], ratio.clamp(1 - eps, 1 + eps) * adv[:, None]) * logps / logps.detach()
    return (per_token * mask).sum() / mask.sum()


@pytest.mark.parametrize("wrong, message", [
    (unclipped, "must be clipped"),
    (sequence_mean, "average over the reply tokens"),
    (detached_ratio, "gradient is not"),
])
def test_loss_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_grpo_loss(wrong)
