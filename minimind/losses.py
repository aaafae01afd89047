"""The losses of every training stage, in one place: each is a plain function of tensors."""
import torch
import torch.nn.functional as F


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Next-token cross-entropy with unshifted labels (labels[t] is the target of logits[t-1]).

    Token-level mean over every supervised position of the batch, as upstream MiniMind.
    logits: (B, T, V); labels: (B, T) with `ignore_index` where nothing is supervised.
    """
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=ignore_index,
    )
