"""Self-checks for chapter 6 (DPO): Bradley–Terry preference, sequence log-probs, the DPO loss."""
import math

import torch

from minimind.losses import dpo_loss, sequence_logps


def _scalar(value):
    return value[0] if isinstance(value, tuple) else value


def check_bradley_terry(fn) -> None:
    """fn(reward_a, reward_b) -> P(a preferred over b) under Bradley–Terry, elementwise on tensors."""
    reward_a = torch.tensor([0.0, 1.0, -2.0, 30.0, -30.0])
    reward_b = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    got = fn(reward_a.clone(), reward_b.clone())
    assert got.shape == reward_a.shape, f"shape {tuple(got.shape)} should be {tuple(reward_a.shape)}"
    assert abs(got[0].item() - 0.5) < 1e-6, "equal rewards must give probability 1/2"
    want = torch.sigmoid(reward_a - reward_b)
    assert torch.allclose(got, want, atol=1e-6), (
        "P(a ≻ b) = exp(r_a) / (exp(r_a) + exp(r_b)) = σ(r_a − r_b); use the sigmoid of the difference, "
        "it does not overflow for large rewards")
    shifted = fn(reward_a + 100.0, reward_b + 100.0)
    assert torch.allclose(shifted, want, atol=1e-6), "adding the same constant to both rewards must not matter"
    print("✓ Bradley–Terry: P(a ≻ b) = σ(r_a − r_b), shift-invariant")


def check_sequence_logps(fn) -> None:
    """fn(logits, input_ids, loss_mask) -> (B,) summed log-probs of the supervised (response) tokens.

    Labels are unshifted: the logits at position t−1 predict the token at position t."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 8, 13, generator=gen) * 2
    ids = torch.randint(0, 13, (3, 8), generator=gen)
    mask = torch.zeros(3, 8, dtype=torch.long)
    mask[0, 3:] = 1
    mask[1, 5:7] = 1
    mask[2, 1:] = 1
    got = fn(logits.clone(), ids.clone(), mask.clone())
    want = sequence_logps(logits, ids, mask)
    assert got.shape == want.shape, f"one number per sequence: shape {tuple(got.shape)} should be {tuple(want.shape)}"
    unshifted = (torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1) * mask).sum(1)
    assert not torch.allclose(got, unshifted, atol=1e-4), (
        "the token at position t is predicted by the logits at t−1: shift by one (logits[:, :-1] vs ids[:, 1:])")
    assert torch.allclose(got, want, atol=1e-4), (
        f"expected {[round(v, 3) for v in want.tolist()]}, got {[round(v, 3) for v in got.tolist()]}: "
        "sum log_softmax(logits)[target] over the positions whose mask is 1, prompt and padding excluded")
    print("✓ sequence log-probs: shifted by one, response tokens only, summed")


def check_dpo_loss(fn) -> None:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> scalar loss (mean over pairs);
    a (loss, metrics) tuple is accepted too."""
    gen = torch.Generator().manual_seed(1)
    logps = [-(torch.rand(6, generator=gen) * 20 + 1) for _ in range(4)]
    same = _scalar(fn(logps[0], logps[1], logps[0].clone(), logps[1].clone(), 0.1))
    assert abs(same.item() - math.log(2)) < 1e-5, (
        f"policy = reference must give ln 2 = 0.6931, got {same.item():.4f}: the rewards are log-ratios "
        "β·(log π − log π_ref), both zero at the start")
    for beta in (0.1, 0.5):
        got = _scalar(fn(*[t.clone() for t in logps], beta))
        want, _ = dpo_loss(*logps, beta=beta)
        assert got.dim() == 0, "return one number: the mean over pairs"
        assert torch.allclose(got, want, atol=1e-5), (
            f"beta={beta}: expected {want.item():.4f}, got {got.item():.4f}; "
            "loss = −log σ(β·[(π_c − ref_c) − (π_r − ref_r)]), averaged")
    chosen = logps[0].clone().requires_grad_(True)
    rejected = logps[1].clone().requires_grad_(True)
    _scalar(fn(chosen, rejected, logps[2], logps[3], 0.1)).backward()
    assert chosen.grad is not None and (chosen.grad < 0).all() and (rejected.grad > 0).all(), (
        "the gradient must raise chosen and lower rejected log-probs: keep the policy log-probs in the graph")
    print("✓ DPO loss matches minimind.losses.dpo_loss (ln 2 at the start, right gradient signs)")
