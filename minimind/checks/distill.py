"""Self-checks for chapter 9 (distillation): soft targets and the distillation loss."""
import torch

from minimind.losses import IGNORE_INDEX, distillation_loss


def check_soft_targets(fn) -> None:
    """fn(logits, temperature) -> probabilities softmax(logits / T) over the last axis."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 11, generator=gen) * 3
    for temperature in (0.5, 1.0, 4.0):
        got = fn(logits.clone(), temperature)
        assert got.shape == logits.shape, f"shape {tuple(got.shape)} should be {tuple(logits.shape)}"
        assert torch.allclose(got.sum(-1), torch.ones(4), atol=1e-5), "each row must sum to 1"
        want = torch.softmax(logits / temperature, dim=-1)
        assert torch.allclose(got, want, atol=1e-5), f"T={temperature}: divide the logits by T before the softmax"
    print("✓ soft targets: softmax(z / T), rows sum to 1")


def check_distillation_loss(fn) -> None:
    """fn(student_logits, teacher_logits, labels, alpha, temperature) -> scalar loss
    (a (loss, metrics) tuple is accepted too)."""
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(2, 9, 17, generator=gen)
    teacher = torch.randn(2, 9, 17, generator=gen) * 2
    labels = torch.randint(0, 17, (2, 9), generator=gen)
    labels[:, :3] = IGNORE_INDEX
    labels[1, 7:] = IGNORE_INDEX
    hints = {
        1.0: "alpha=1 must give plain cross-entropy on the supervised targets",
        0.0: "alpha=0 must give T²·KL(teacher‖student), averaged over supervised tokens only",
        0.3: "the mix is alpha·CE + (1 − alpha)·T²·KL",
    }
    for alpha, hint in hints.items():
        for temperature in (1.0, 2.0):
            got = fn(student.clone(), teacher.clone(), labels.clone(), alpha, temperature)
            got = got[0] if isinstance(got, tuple) else got
            want, _ = distillation_loss(student, teacher, labels, alpha, temperature)
            assert torch.allclose(got, want, atol=1e-4), (
                f"alpha={alpha}, T={temperature}: expected {want.item():.4f}, got {got.item():.4f}. {hint}."
            )
    print("✓ distillation loss matches minimind.losses.distillation_loss")
