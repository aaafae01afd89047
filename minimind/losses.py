"""The losses of every training stage, in one place: each is a plain function of tensors.

Labels are *unshifted*, as upstream's: `labels[t]` is the target the model predicts at position
`t - 1`, and `IGNORE_INDEX` (-100, PyTorch's default) marks a position that is no target.
`next_token_targets` is the one place that shift is made.
"""
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # a label that is no target (F.cross_entropy's default ignore_index)


def next_token_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The target of each position: (B, T) with `labels[:, t + 1]` at position t and `ignore_index`
    at the last one (it predicts nothing). The small labels are shifted rather than the (B, T, V)
    logits, which slicing would copy: as much memory as the logits themselves."""
    return F.pad(labels[:, 1:], (0, 1), value=ignore_index)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Next-token cross-entropy with unshifted labels (labels[t] is the target of logits[t-1]).

    Token-level mean over every supervised position of the batch, as upstream MiniMind.
    logits: (B, T, V); labels: (B, T) with `ignore_index` where nothing is supervised.
    """
    targets = next_token_targets(labels, ignore_index)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=ignore_index)


def supervised_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX):
    """Where a next-token target exists, and which: the (B, T) bool mask of the predicting
    positions t whose target labels[t+1] is supervised, and those (N,) targets in row-major order.

    Pass the mask as `MiniMind(..., logits_at=mask)` and the logits come back (N, V), row for
    row with the targets: a loss that supervises a fraction of the positions then never runs
    the LM head, nor the softmax, where nothing is learned.
    """
    targets = next_token_targets(labels, ignore_index)
    mask = targets != ignore_index
    return mask, targets[mask]


def reasoning_weighted_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    tag_ids,
    tag_weight: float = 10.0,
    normalize: str = "weighted",
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Next-token cross-entropy in which the targets that are format tags weigh `tag_weight`.

    Only positions whose *target* id is in `tag_ids` (the single special tokens `<think>`,
    `</think>`, `<answer>`, `</answer>`) are up-weighted; every other supervised token
    weighs 1, unsupervised ones (`ignore_index`) weigh 0. Labels are unshifted.

    normalize="weighted" (default): sum(w·ce) / sum(w) — a weighted mean, so the loss stays
        on the scale of a cross-entropy whatever the weight; with weight 1 it equals
        `masked_cross_entropy` exactly.
    normalize="tokens": sum(w·ce) / (number of supervised tokens) — upstream MiniMind2's
        choice; the loss (and its gradient) grows with the weight and
        with the share of tags in the batch.
    logits: (B, T, V); labels: (B, T). Returns a scalar.
    """
    return combine_reasoning_terms(*reasoning_loss_terms(logits, labels, tag_ids, ignore_index), tag_weight, normalize)


def combine_reasoning_terms(per_token, supervised, is_tag, tag_weight: float = 10.0, normalize: str = "weighted"):
    """`reasoning_weighted_loss` from the output of `reasoning_loss_terms`."""
    if normalize not in ("weighted", "tokens"):
        raise ValueError(f"normalize must be 'weighted' or 'tokens', got {normalize!r}")
    if tag_weight < 0:
        raise ValueError(f"tag_weight must be >= 0, got {tag_weight}")
    weights = supervised * torch.where(is_tag, float(tag_weight), 1.0)
    total = (per_token * weights).sum()
    denominator = weights.sum() if normalize == "weighted" else supervised.sum()
    # An empty batch (nothing supervised) gives 0 with a graph, not NaN.
    return total / denominator.clamp_min(torch.finfo(total.dtype).tiny)


def reasoning_loss_terms(logits: torch.Tensor, labels: torch.Tensor, tag_ids, ignore_index: int = IGNORE_INDEX):
    """The pieces `reasoning_weighted_loss` combines, each (B, T) and indexed by the predicting
    position t (its target is labels[t+1]): the per-token cross-entropy (0 where nothing is
    supervised), the supervised mask (float) and whether the target is a tag (bool).

    As in `masked_cross_entropy`, the labels are shifted, not the (B, T, V) logits, which
    slicing would copy. A training step that also wants the plain and the tag-only
    cross-entropy (`minimind.train.reason`) derives them from these, without a second softmax."""
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    targets = next_token_targets(labels, ignore_index)
    per_token = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).view_as(targets)
    supervised = (targets != ignore_index).float()
    tag_ids = torch.as_tensor(list(tag_ids), dtype=targets.dtype, device=targets.device)
    return per_token, supervised, torch.isin(targets, tag_ids)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    reverse: bool = False,
    ignore_index: int = IGNORE_INDEX,
):
    """Knowledge distillation: alpha·CE(labels) + (1 − alpha)·T²·KL on supervised tokens.

    KL is taken between the temperature-softened distributions softmax(z/T) of teacher and
    student, averaged over the supervised target positions only (as upstream MiniMind).
    Forward KL(teacher‖student) by default — the student must cover every token the
    teacher deems likely; reverse=True gives KL(student‖teacher), which lets the student
    concentrate on the teacher's main mode. The T² factor keeps the gradient of the KL term
    on the same scale across temperatures (the softened gradient shrinks like 1/T²).
    The teacher's logits are detached: no gradient flows into the teacher.
    student_logits, teacher_logits: (B, T, V) with the same V; labels: (B, T), unshifted.
    Returns (loss, metrics) where metrics holds the detached "ce" and "kl" terms.
    """
    if student_logits.size(-1) != teacher_logits.size(-1):
        raise ValueError(
            f"student vocabulary ({student_logits.size(-1)}) differs from teacher vocabulary "
            f"({teacher_logits.size(-1)}): distillation needs both models on the same tokenizer"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    if student_logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(student_logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    targets = next_token_targets(labels, ignore_index)
    supervised = targets != ignore_index  # (B, T); the last position is never supervised
    student = student_logits[supervised]  # (N, V): supervised positions only
    teacher = teacher_logits[supervised]
    return distillation_terms(student, teacher, targets[supervised], alpha, temperature, reverse)


def distillation_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 1.0,
    reverse: bool = False,
):
    """`distillation_loss` on the supervised positions alone: logits (N, V), targets (N,).

    What a training step calls after `MiniMind(..., logits_at=mask)` computed the two models'
    logits only where a target exists (`supervised_targets`). Returns (loss, metrics).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.shape[:1] != targets.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)}, teacher logits {tuple(teacher_logits.shape)} "
            f"and targets {tuple(targets.shape)} must be (N, V), (N, V), (N,)"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.size(0) == 0:  # nothing supervised: 0 with a graph, not NaN
        zero = student_logits.sum() * 0.0
        return zero, {"ce": zero.detach(), "kl": zero.detach()}
    student = student_logits.float()
    teacher = teacher_logits.detach().float()
    ce = F.cross_entropy(student, targets)
    student_logp = F.log_softmax(student / temperature, dim=-1)
    teacher_logp = F.log_softmax(teacher / temperature, dim=-1)
    if reverse:  # KL(student‖teacher) = Σ p_s (log p_s − log p_t)
        kl = (student_logp.exp() * (student_logp - teacher_logp)).sum(-1).mean()
    else:  # KL(teacher‖student) = Σ p_t (log p_t − log p_s)
        kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).mean()
    loss = alpha * ce + (1.0 - alpha) * temperature**2 * kl
    return loss, {"ce": ce.detach(), "kl": kl.detach()}


def sequence_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    average: bool = False,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Log-probability of each sequence's supervised tokens: log π(response | prompt), shape (B,).

    Labels are unshifted token ids (labels[t] is the target of logits[t-1]). A position is
    supervised when its label is not `ignore_index` and, if `loss_mask` (one entry per id, as
    `render_conversation` returns it) is given, the mask marks it. So both calling styles work:
    `sequence_logps(logits, labels_with_minus_100)` and `sequence_logps(logits, ids, mask)`.

    average=False sums the token log-probs (the DPO paper's log π(y|x)); average=True divides
    by the number of supervised tokens (length-normalised, as upstream MiniMind2 and SimPO).
    A row with no supervised token is an error: it would score an empty response.
    logits: (B, T, V); labels, loss_mask: (B, T).
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on (B, T)")
    if loss_mask is not None and loss_mask.shape != labels.shape:
        raise ValueError(f"loss_mask {tuple(loss_mask.shape)} must have the shape of labels {tuple(labels.shape)}")
    targets = next_token_targets(labels, ignore_index)[:, :-1]  # (B, T-1): the last position predicts nothing
    supervised = targets != ignore_index
    if loss_mask is not None:
        supervised = supervised & loss_mask[:, 1:].bool()
    n_tokens = supervised.sum(dim=1)
    empty = (n_tokens == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no supervised token: a preference pair needs a non-empty response")
    logits = logits[:, :-1].float()
    safe_targets = targets.masked_fill(~supervised, 0).unsqueeze(-1)
    # log softmax at the target only: logit[target] - logsumexp(logits); never builds a (B, T, V) log-prob tensor.
    token_logps = torch.gather(logits, -1, safe_targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    total = (token_logps * supervised).sum(dim=1)
    return total / n_tokens if average else total


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
):
    """Direct Preference Optimization loss (Rafailov et al. 2023, Eq. 7), averaged over pairs.

    The implicit reward of a response is r = β·(log π(y|x) − log π_ref(y|x)); the loss is
    −log σ(r_chosen − r_rejected). With label_smoothing ε > 0 it is the conservative DPO of
    Mitchell (2023), which assumes each label is flipped with probability ε:
    −(1 − ε)·log σ(Δ) − ε·log σ(−Δ).
    All four inputs are per-pair sequence log-probs of shape (B,) (see `sequence_logps`).
    Returns (loss, metrics); metrics are detached scalars: reward_margin, preference_accuracy
    (share of pairs whose chosen reward beats the rejected one), chosen_reward, rejected_reward,
    chosen_logps, rejected_logps (policy log-probs).
    """
    inputs = {
        "policy_chosen_logps": policy_chosen_logps,
        "policy_rejected_logps": policy_rejected_logps,
        "reference_chosen_logps": reference_chosen_logps,
        "reference_rejected_logps": reference_rejected_logps,
    }
    for name, tensor in inputs.items():
        if tensor.dim() != 1:
            raise ValueError(f"{name} must have shape (B,), got {tuple(tensor.shape)}")
        if tensor.shape != policy_chosen_logps.shape:
            raise ValueError(
                f"{name} has {tensor.numel()} pairs but policy_chosen_logps has {policy_chosen_logps.numel()}: "
                "chosen and rejected must come in pairs"
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or infinite log-probs")
    if policy_chosen_logps.numel() == 0:
        raise ValueError("dpo_loss needs at least one preference pair")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps.detach()
    rejected_logratios = policy_rejected_logps - reference_rejected_logps.detach()
    margin = beta * (chosen_logratios - rejected_logratios)  # r_chosen − r_rejected
    losses = -(1.0 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = {
        "reward_margin": (chosen_rewards - rejected_rewards).mean(),
        "preference_accuracy": (chosen_rewards > rejected_rewards).float().mean(),
        "chosen_reward": chosen_rewards.mean(),
        "rejected_reward": rejected_rewards.mean(),
        "chosen_logps": policy_chosen_logps.detach().mean(),
        "rejected_logps": policy_rejected_logps.detach().mean(),
    }
    return losses.mean(), metrics
