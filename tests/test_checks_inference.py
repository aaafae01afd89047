"""The chapter 10 self-checks accept the reference solutions and reject typical mistakes."""
import pytest
import torch

from minimind.checks import inference as checks
from minimind.generate import IncrementalDecoder, apply_repetition_penalty, top_p_filter
from inference_helpers import tiny_tokenizer


def reference_top_p(probs, p):
    return torch.isfinite(top_p_filter(probs.log()[None], p)[0])


def reference_penalty(logits, previous, penalty):
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen[list(previous)] = True
    return apply_repetition_penalty(logits, seen, penalty)


def reference_decode(tokenizer, ids):
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    pieces[-1] += decoder.flush()
    return pieces


def test_checks_accept_the_reference_solutions(capsys):
    checks.check_temperature_softmax(lambda logits, t: torch.softmax(logits / t, -1))
    checks.check_top_p(reference_top_p)
    checks.check_repetition_penalty(reference_penalty)
    checks.check_incremental_decode(reference_decode, tiny_tokenizer())
    assert capsys.readouterr().out.count("✓") == 4


def test_checks_reject_common_mistakes():
    with pytest.raises(AssertionError, match="temperature"):
        checks.check_temperature_softmax(lambda logits, t: torch.softmax(logits * t, -1))
    with pytest.raises(AssertionError, match="p="):  # keeping tokens while the mass *including* them is below p
        checks.check_top_p(lambda probs, p: (probs.sort(descending=True).values.cumsum(0) < p)[probs.argsort(descending=True).argsort()])
    with pytest.raises(AssertionError, match="penal"):
        checks.check_repetition_penalty(lambda logits, prev, pen: logits - pen * torch.bincount(torch.tensor(prev), minlength=5))
    with pytest.raises(AssertionError, match="ufffd"):
        checks.check_incremental_decode(lambda tok, ids: [tok.decode([i]) for i in ids], tiny_tokenizer())
