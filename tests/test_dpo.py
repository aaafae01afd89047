"""DPO: the loss's fixed points and gradients, sequence log-probs and their masks, equivalence with TRL."""
import math
import types
from collections import defaultdict

import pytest
import torch

from minimind.losses import dpo_loss, masked_cross_entropy, sequence_logps


def random_logps(seed: int, n: int = 8):
    generator = torch.Generator().manual_seed(seed)
    return [-(torch.rand(n, generator=generator) * 30 + 1) for _ in range(4)]


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    chosen, rejected, _, _ = random_logps(0)
    loss, metrics = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert metrics["reward_margin"].item() == 0.0
    assert metrics["preference_accuracy"].item() == 0.0  # a tie is not a preference
    # label smoothing keeps ln 2 at the start: σ(0) = 1/2 whichever way the label points
    smoothed, _ = dpo_loss(chosen, rejected, chosen.clone(), rejected.clone(), beta=0.5, label_smoothing=0.2)
    assert smoothed.item() == pytest.approx(math.log(2), abs=1e-7)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = random_logps(1)
    policy_chosen.requires_grad_(True)
    policy_rejected.requires_grad_(True)
    loss, _ = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1)
    loss.backward()
    # gradient descent moves against the gradient: chosen log-probs rise, rejected fall
    assert (policy_chosen.grad < 0).all()
    assert (policy_rejected.grad > 0).all()
    # and with magnitude β·σ(−margin)/B, largest for the pairs the policy gets most wrong
    margin = 0.1 * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)).detach()
    torch.testing.assert_close(policy_chosen.grad, -0.1 * torch.sigmoid(-margin) / len(margin))


def test_one_dpo_step_on_a_model_raises_chosen_and_lowers_rejected_log_probs():
    torch.manual_seed(0)
    vocab, length = 32, 10
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, 16), torch.nn.Linear(16, vocab))
    prompt = torch.randint(0, vocab, (1, 5))
    chosen = torch.cat([prompt, torch.randint(0, vocab, (1, length - 5))], dim=1)
    rejected = torch.cat([prompt, torch.randint(0, vocab, (1, length - 5))], dim=1)
    mask = torch.zeros(1, length, dtype=torch.long)
    mask[:, 5:] = 1
    with torch.no_grad():
        ref = [sequence_logps(model(ids), ids, mask) for ids in (chosen, rejected)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    policy = [sequence_logps(model(ids), ids, mask) for ids in (chosen, rejected)]
    loss, _ = dpo_loss(*policy, *ref, beta=0.1)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = [sequence_logps(model(ids), ids, mask) for ids in (chosen, rejected)]
    assert after[0] > ref[0] and after[1] < ref[1]


def test_sequence_logps_counts_only_supervised_response_tokens():
    torch.manual_seed(0)
    batch, length, vocab = 3, 9, 11
    logits = torch.randn(batch, length, vocab)
    ids = torch.randint(0, vocab, (batch, length))
    mask = torch.zeros(batch, length, dtype=torch.long)
    mask[0, 4:] = 1
    mask[1, 2:7] = 1  # response followed by padding
    mask[2, 8:] = 1
    logp = torch.log_softmax(logits, -1)
    expected = torch.stack(
        [sum(logp[b, t - 1, ids[b, t]] for t in range(1, length) if mask[b, t]) for b in range(batch)]
    )
    torch.testing.assert_close(sequence_logps(logits, ids, mask), expected)
    torch.testing.assert_close(sequence_logps(logits, ids, mask, average=True), expected / mask[:, 1:].sum(1))
    # the same through -100 labels instead of a mask
    labels = ids.masked_fill(mask == 0, -100)
    torch.testing.assert_close(sequence_logps(logits, labels), expected)
    # changing the logits that predict prompt or padding tokens changes nothing
    perturbed = logits.clone()
    for b in range(batch):
        for t in range(1, length):
            if not mask[b, t]:
                perturbed[b, t - 1] += torch.randn(vocab) * 5
    perturbed[:, -1] += 100.0  # the last position predicts nothing
    torch.testing.assert_close(sequence_logps(perturbed, ids, mask), expected)


def test_sequence_logps_average_is_minus_the_masked_cross_entropy_of_each_row():
    torch.manual_seed(1)
    logits = torch.randn(2, 7, 13)
    ids = torch.randint(0, 13, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[:, :3] = 0
    for row in range(2):
        labels = ids[row : row + 1].masked_fill(mask[row : row + 1] == 0, -100)
        cross_entropy = masked_cross_entropy(logits[row : row + 1], labels)
        mean_logp = sequence_logps(logits[row : row + 1], ids[row : row + 1], mask[row : row + 1], average=True)
        torch.testing.assert_close(mean_logp, -cross_entropy.reshape(1))


def test_malformed_pairs_get_clear_errors():
    chosen, rejected, ref_chosen, ref_rejected = random_logps(2)
    with pytest.raises(ValueError, match="chosen and rejected must come in pairs"):
        dpo_loss(chosen, rejected[:-1], ref_chosen, ref_rejected)
    with pytest.raises(ValueError, match=r"must have shape \(B,\)"):
        dpo_loss(chosen[None], rejected, ref_chosen, ref_rejected)
    nan = rejected.clone()
    nan[3] = float("nan")
    with pytest.raises(ValueError, match="policy_rejected_logps contains NaN"):
        dpo_loss(chosen, nan, ref_chosen, ref_rejected)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.0)
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 0.5\)"):
        dpo_loss(chosen, rejected, ref_chosen, ref_rejected, label_smoothing=0.5)
    with pytest.raises(ValueError, match="at least one preference pair"):
        empty = torch.zeros(0)
        dpo_loss(empty, empty, empty, empty)
    logits, ids = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1] = 0
    mask[1, 0] = 1  # only the first token: it is never a target, so the response is empty
    with pytest.raises(ValueError, match=r"rows \[1\] have no supervised token"):
        sequence_logps(logits, ids, mask)
    with pytest.raises(ValueError, match="disagree on"):
        sequence_logps(logits, ids[:, :4], mask[:, :4])


# ---- equivalence with TRL's DPOTrainer loss --------------------------------------------------------------
# TRL 1.16 computes the DPO loss inside DPOTrainer._compute_loss, from a model patched with its fused LM head.
# We build the trainer object without its constructor (no datasets, no accelerate launch) and set exactly the
# attributes that method reads; the model is a tiny transformers Llama, so the log-probs come from TRL's own
# kernel, not from ours.


class _SingleProcessAccelerator:
    device = torch.device("cpu")

    def gather(self, tensor):
        return tensor

    gather_for_metrics = gather

    def unwrap_model(self, model):
        return model


def _trl_dpo_loss(model, input_ids, completion_mask, ref_chosen, ref_rejected, beta, loss_types, loss_weights,
                  label_smoothing=0.0):
    from trl import DPOTrainer

    trainer = DPOTrainer.__new__(DPOTrainer)
    trainer.__dict__.update(
        model=model, accelerator=_SingleProcessAccelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=loss_types, loss_weights=loss_weights,
        beta=beta, label_smoothing=label_smoothing, use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
        args=types.SimpleNamespace(),
    )
    inputs = dict(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), completion_mask=completion_mask,
        ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected,
    )
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    return loss, {k: v[-1] for k, v in trainer._metrics["train" if model.training else "eval"].items()}


def _llama_and_pairs(pairs: int = 3, length: int = 12):
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(3, 64, (pairs, 5), generator=generator)
    responses = torch.randint(3, 64, (2 * pairs, length - 5), generator=generator)
    input_ids = torch.cat([prompts.repeat(2, 1), responses], dim=1)  # [chosen…, rejected…], as TRL batches them
    completion_mask = torch.zeros_like(input_ids)
    response_lengths = torch.tensor([7, 4, 6, 3, 7, 5])[: 2 * pairs]  # unequal lengths: sum ≠ mean ranking
    for row, n in enumerate(response_lengths):
        completion_mask[row, 5 : 5 + n] = 1
    return model, input_ids, completion_mask


def _ours(model, input_ids, completion_mask, ref_chosen, ref_rejected, beta, average, sft_weight=0.0,
          label_smoothing=0.0):
    logits = model(input_ids=input_ids).logits
    logps = sequence_logps(logits, input_ids, completion_mask, average=average)
    chosen, rejected = logps.chunk(2)
    loss, metrics = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta, label_smoothing)
    if sft_weight:
        chosen_labels = input_ids.masked_fill(completion_mask == 0, -100).chunk(2)[0]
        loss = loss + sft_weight * masked_cross_entropy(logits.chunk(2)[0], chosen_labels)
    return loss, metrics


@pytest.mark.parametrize(
    "average, trl_loss_types, trl_weights, sft_weight",
    [
        (False, ["sigmoid"], [1.0], 0.0),  # the paper's DPO: summed log-probs
        (True, ["sigmoid_norm"], [1.0], 0.0),  # length-averaged log-probs
        (False, ["sigmoid", "sft"], [1.0, 0.3], 0.3),  # DPO + an SFT term on the chosen responses
    ],
)
def test_loss_metrics_and_gradients_equal_trl(average, trl_loss_types, trl_weights, sft_weight):
    model, input_ids, completion_mask = _llama_and_pairs()
    generator = torch.Generator().manual_seed(2)
    ref_chosen, ref_rejected = -torch.rand(2, 3, generator=generator) * 20
    if average:
        # TRL's sigmoid_norm divides both policy and reference log-probs by the length: give it summed reference
        # log-probs and hand ours the matching averages.
        lengths = completion_mask.sum(1).float().chunk(2)
        ours_ref = (ref_chosen / lengths[0], ref_rejected / lengths[1])
    else:
        ours_ref = (ref_chosen, ref_rejected)
    beta = 0.3
    trl_loss, trl_metrics = _trl_dpo_loss(model, input_ids, completion_mask, ref_chosen, ref_rejected, beta,
                                          trl_loss_types, trl_weights)
    trl_loss.backward()
    trl_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    our_loss, our_metrics = _ours(model, input_ids, completion_mask, *ours_ref, beta, average, sft_weight)
    our_loss.backward()
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-6)
    for ours_grad, trl_grad in zip((p.grad for p in model.parameters()), trl_grads):
        torch.testing.assert_close(ours_grad, trl_grad, rtol=1e-4, atol=1e-6)
    if not average:  # TRL logs rewards from summed log-probs
        assert our_metrics["reward_margin"].item() == pytest.approx(trl_metrics["rewards/margins"], abs=1e-5)
        assert our_metrics["preference_accuracy"].item() == pytest.approx(trl_metrics["rewards/accuracies"])
        assert our_metrics["chosen_reward"].item() == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-5)
        assert our_metrics["chosen_logps"].item() == pytest.approx(trl_metrics["logps/chosen"], abs=1e-4)
        assert our_metrics["rejected_logps"].item() == pytest.approx(trl_metrics["logps/rejected"], abs=1e-4)


def test_label_smoothing_equals_trl_conservative_form():
    # TRL 1.16 has no label smoothing on its "sigmoid" loss any more; its "aot" loss is the conservative
    # −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ) applied after sorting the batch's log-ratios. On one pair the sorting
    # is the identity, so pair by pair it is exactly cDPO.
    model, input_ids, completion_mask = _llama_and_pairs()
    generator = torch.Generator().manual_seed(3)
    ref_chosen, ref_rejected = -torch.rand(2, 3, generator=generator) * 20
    pairs = input_ids.size(0) // 2
    for pair in range(pairs):
        rows = [pair, pair + pairs]
        args = (model, input_ids[rows], completion_mask[rows], ref_chosen[pair : pair + 1],
                ref_rejected[pair : pair + 1])
        trl_loss, _ = _trl_dpo_loss(*args, beta=0.2, loss_types=["aot"], loss_weights=[1.0], label_smoothing=0.2)
        our_loss, _ = _ours(*args, beta=0.2, average=False, label_smoothing=0.2)
        torch.testing.assert_close(our_loss, trl_loss, rtol=1e-5, atol=1e-6)


def test_chapter_checks_accept_the_reference_and_reject_common_mistakes():
    import torch.nn.functional as F

    from minimind.checks.dpo import check_bradley_terry, check_dpo_loss, check_sequence_logps

    check_bradley_terry(lambda a, b: torch.sigmoid(a - b))
    check_sequence_logps(lambda logits, ids, mask: sequence_logps(logits, ids, mask))
    check_dpo_loss(lambda *logps_and_beta: dpo_loss(*logps_and_beta))
    unshifted = lambda logits, ids, mask: (logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0] * mask).sum(1)
    no_reference = lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * (pc - pr)).mean()
    for check, wrong, hint in (
        (check_bradley_terry, lambda a, b: torch.sigmoid(b - a), "σ"),
        (check_sequence_logps, unshifted, "shift by one"),
        (check_dpo_loss, no_reference, "ln 2"),
    ):
        with pytest.raises(AssertionError, match=hint):
            check(wrong)
