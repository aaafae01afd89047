"""Self-checks for chapter 7 (LoRA): parameter count, the adapted forward pass, merging."""
import torch


def check_lora_parameter_count(fn) -> None:
    """fn(in_features, out_features, rank) -> number of parameters a LoRA adapter adds to one linear layer."""
    for in_features, out_features, rank in ((512, 512, 8), (512, 1408, 16), (128, 64, 1)):
        got = fn(in_features, out_features, rank)
        want = rank * (in_features + out_features)
        assert got == want, (
            f"({in_features}→{out_features}, rank {rank}): expected {want}, got {got}; "
            "A is (rank × in), B is (out × rank)")
    print("✓ LoRA parameter count: rank·(in + out)")


def check_lora_forward(fn) -> None:
    """fn(x, weight, lora_A, lora_B, alpha) -> W·x + (alpha / rank)·B·A·x for a batch x of shape (N, in)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 12, generator=gen)
    weight = torch.randn(7, 12, generator=gen)
    lora_A = torch.randn(3, 12, generator=gen)
    lora_B = torch.randn(7, 3, generator=gen)
    for alpha in (3.0, 12.0):
        got = fn(x, weight, lora_A, lora_B, alpha)
        want = x @ weight.T + (alpha / 3) * (x @ lora_A.T @ lora_B.T)
        assert got.shape == want.shape, f"shape {tuple(got.shape)} should be {tuple(want.shape)}"
        assert torch.allclose(got, want, atol=1e-4), (
            f"alpha={alpha}: scale the low-rank path by alpha / rank (rank = lora_A.shape[0] = 3), "
            "and apply A first, then B")
    zero = fn(x, weight, lora_A, torch.zeros_like(lora_B), 12.0)
    assert torch.allclose(zero, x @ weight.T, atol=1e-5), "with B = 0 the layer must equal the base layer"
    print("✓ LoRA forward: W·x + (alpha/rank)·B·A·x, exact base model at B = 0")


def check_merge(fn) -> None:
    """fn(weight, lora_A, lora_B, alpha) -> merged weight W + (alpha / rank)·B·A (a new tensor)."""
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 10, generator=gen)
    lora_A = torch.randn(2, 10, generator=gen)
    lora_B = torch.randn(6, 2, generator=gen)
    original = weight.clone()
    got = fn(weight, lora_A, lora_B, 4.0)
    assert got.shape == weight.shape, f"merged weight shape {tuple(got.shape)} should be {tuple(weight.shape)}"
    want = original + 2.0 * lora_B @ lora_A
    assert torch.allclose(got, want, atol=1e-5), "merged = W + (alpha / rank)·B @ A, with B (out × r) first"
    assert torch.equal(weight, original), "do not modify the base weight in place; return a new tensor"
    x = torch.randn(4, 10, generator=gen)
    unmerged = x @ original.T + 2.0 * x @ lora_A.T @ lora_B.T
    assert torch.allclose(x @ got.T, unmerged, atol=1e-4), "the merged layer must give the adapted outputs"
    print("✓ LoRA merge: one matrix, same outputs as base + adapter")
