"""Self-checks for chapter 12 (reinforcement learning): group-relative advantages and GRPO's loss."""
import torch

from minimind.train.rl import group_advantages, grpo_token_loss


def check_group_advantages(fn) -> None:
    """fn(rewards (B,), group_size) -> (B,): each reward minus its group's mean, divided by the
    group's unbiased std + 1e-4; exactly 0 for a group whose rewards are all equal."""
    cases = [torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]), torch.tensor([0.1, 1.1, 0.1, 0.0, 0.0, 0.0])]
    for rewards, group in zip(cases, (4, 3)):
        got = fn(rewards.clone(), group)
        want = group_advantages(rewards, group)
        assert torch.is_tensor(got) and got.shape == rewards.shape, f"return a tensor of shape {tuple(rewards.shape)}"
        flat = want.view(-1, group).abs().sum(1) == 0
        assert torch.all(got.view(-1, group)[flat] == 0), (
            "a group whose rewards are all equal must get advantage exactly 0 (its std is 0: "
            "there is nothing to prefer within it)")
        sums = got.view(-1, group).sum(1)
        assert torch.allclose(sums, torch.zeros_like(sums), atol=1e-5), "subtract each group's own mean, not the batch's"
        biased = (rewards.view(-1, group) - rewards.view(-1, group).mean(1, keepdim=True)) / (
            rewards.view(-1, group).std(1, unbiased=False, keepdim=True) + 1e-4)
        assert not torch.allclose(got, biased.masked_fill(flat[:, None], 0).view(-1), atol=1e-4), (
            "divide by the unbiased std (torch's default, n − 1), as GRPO's implementations do")
        assert torch.allclose(got, want, atol=1e-4), f"expected {want.tolist()}, got {got.tolist()}"
    print("✓ group advantages match minimind.train.rl.group_advantages")


def _batch(seed: int):
    generator = torch.Generator().manual_seed(seed)
    logps = -torch.rand(4, 7, generator=generator) * 3
    old = logps + torch.randn(4, 7, generator=generator) * 0.3
    mask = torch.zeros(4, 7, dtype=torch.bool)
    for row, n in enumerate((7, 3, 5, 6)):
        mask[row, :n] = True
    advantages = torch.tensor([1.0, -0.5, 2.0, -1.5])
    return logps, old, mask, advantages


def check_grpo_loss(fn) -> None:
    """fn(logps, old_logps, advantages, mask, eps) -> scalar: the token mean over `mask` of
    −min(r·A, clip(r, 1 − eps, 1 + eps)·A), r = exp(logps − old_logps); also its gradient."""
    for seed in range(3):
        logps, old, mask, advantages = _batch(seed)
        mine = logps.clone().requires_grad_(True)
        got = fn(mine, old, advantages, mask, 0.2)
        assert torch.is_tensor(got) and got.dim() == 0, "return a scalar tensor"
        theirs = logps.clone().requires_grad_(True)
        want, _ = grpo_token_loss(theirs, old, None, advantages, mask, clip_low=0.2, clip_high=0.2)
        unclipped = -(torch.exp(logps - old) * advantages[:, None] * mask).sum() / mask.sum()
        assert not torch.allclose(got, unclipped, atol=1e-5), "the ratio must be clipped to [1 − eps, 1 + eps]"
        assert torch.allclose(got, want, atol=1e-5), (
            f"expected {want.item():.5f}, got {got.item():.5f}: take the min of the two surrogates *before* the "
            "minus sign, and average over the reply tokens of the whole batch (the mask)")
        got.backward(), want.backward()
        assert torch.allclose(mine.grad, theirs.grad, atol=1e-6), (
            "the loss is right but its gradient is not: compute the ratio from logps (with gradient) and "
            "old_logps (without), so the clip can stop it")
    print("✓ GRPO loss and gradient match minimind.train.rl.grpo_token_loss")
