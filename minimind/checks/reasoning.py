"""Self-checks for chapter 8 (reasoning): the tag-weighted loss and the reply parser."""
import torch

from minimind.losses import IGNORE_INDEX, masked_cross_entropy, reasoning_weighted_loss
from minimind.scoring import parse_reasoning

_TAG_IDS = (3, 4, 5, 6)


def _reasoning_batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 12, 23, generator=gen)
    labels = torch.randint(7, 23, (2, 12), generator=gen)
    labels[:, :4] = IGNORE_INDEX
    labels[0, 4], labels[0, 7], labels[0, 8], labels[0, 10] = 3, 4, 5, 6
    labels[1, 5], labels[1, 9] = 3, 4
    labels[1, 10:] = IGNORE_INDEX
    return logits, labels


def check_reasoning_weighted_loss(fn) -> None:
    """fn(logits, labels, tag_ids, tag_weight) -> scalar: the weighted-mean tag loss
    (sum of w·ce over supervised targets divided by the sum of w)."""
    for seed in range(3):
        logits, labels = _reasoning_batch(seed)
        got = fn(logits.clone(), labels.clone(), _TAG_IDS, 1.0)
        assert torch.is_tensor(got) and got.dim() == 0, "return a scalar tensor"
        assert torch.allclose(got, masked_cross_entropy(logits, labels), atol=1e-5), (
            "with tag_weight=1 the loss must equal plain cross-entropy: are logits[:, :-1] "
            "paired with labels[:, 1:], and -100 targets ignored?"
        )
        for weight in (0.5, 10.0):
            want = reasoning_weighted_loss(logits, labels, _TAG_IDS, weight, normalize="weighted")
            got = fn(logits.clone(), labels.clone(), _TAG_IDS, weight)
            upstream = reasoning_weighted_loss(logits, labels, _TAG_IDS, weight, normalize="tokens")
            assert not torch.allclose(got, upstream, atol=1e-5) or torch.allclose(want, upstream), (
                "you divided by the number of tokens (upstream's choice); divide by the sum of the weights"
            )
            assert torch.allclose(got, want, atol=1e-5), (
                f"tag_weight={weight}: expected {want.item():.4f}, got {got.item():.4f}. Weight a position "
                "by whether its *target* (the shifted label) is a tag id."
            )
    print("✓ reasoning_weighted_loss matches minimind.losses.reasoning_weighted_loss")


_PARSE_CASES = [
    ("<think>1+2=3</think><answer>3</answer>", True, "3"),
    ("\n<think>a</think>\n<answer>\n42\n</answer>\n", True, "42"),
    ("<answer>3</answer>", False, "3"),
    ("<think>a</think><answer>3", False, None),
    ("<answer>3</answer><think>a</think>", False, "3"),
    ("<think>a</think><answer>3</answer><answer>4</answer>", False, "3"),
    ("x <think>a</think><answer>3</answer>", False, "3"),
    ("plain text", False, None),
]


def check_parse_reasoning(fn) -> None:
    """fn(text) -> (think, answer, well_formed), like minimind.eval.parse_reasoning."""
    for text, well_formed, answer in _PARSE_CASES:
        got = fn(text)
        assert isinstance(got, tuple) and len(got) == 3, "return a tuple (think, answer, well_formed)"
        assert bool(got[2]) == well_formed, (
            f"{text!r}: well_formed should be {well_formed} (one think block then one answer block, "
            "each tag exactly once, only whitespace around)"
        )
        assert got[1] == answer, f"{text!r}: answer should be {answer!r}, got {got[1]!r}"
        assert got == parse_reasoning(text), f"{text!r}: expected {parse_reasoning(text)!r}, got {got!r}"
    print(f"✓ parser agrees with minimind.eval.parse_reasoning on {len(_PARSE_CASES)} crafted replies")
