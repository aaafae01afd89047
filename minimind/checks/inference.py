"""Self-checks for chapter 10 (inference): temperature, nucleus filtering, the repetition penalty,
and the incremental detokenizer."""
import torch


def check_temperature_softmax(fn) -> None:
    """fn(logits (V,), temperature > 0) -> probabilities softmax(logits / temperature)."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -4.0])
    for temperature in (0.25, 1.0, 3.0):
        got = fn(logits.clone(), temperature)
        want = torch.softmax(logits / temperature, dim=-1)
        assert got.shape == want.shape, f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
        assert torch.allclose(got, want, atol=1e-6), (
            f"temperature {temperature}: divide the logits by the temperature, then take the softmax")
    big = fn(torch.tensor([1000.0, 999.0, 0.0]), 1.0)
    assert torch.isfinite(big).all(), "subtract the largest logit before exponentiating (or use torch.softmax)"
    print("✓ temperature softmax: low T sharpens, high T flattens")


def check_top_p(fn) -> None:
    """fn(probs (V,), p) -> bool mask (V,) of the tokens nucleus sampling keeps: the most likely
    ones until their probabilities add up to at least p (the single most likely always kept)."""
    probs = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    # sorted: 0.4 (id 1), 0.3 (id 3), 0.15 (id 4), 0.1 (id 2), 0.05 (id 0); no p sits on a boundary
    cases = {0.3: [1], 0.39: [1], 0.45: [1, 3], 0.69: [1, 3], 0.75: [1, 3, 4], 0.9: [1, 3, 4, 2], 0.97: [0, 1, 2, 3, 4]}
    for p, kept in cases.items():
        got = fn(probs.clone(), p)
        want = torch.zeros(5, dtype=torch.bool)
        want[kept] = True
        assert got.dtype == torch.bool and got.shape == (5,), "return a bool mask with one entry per token"
        assert torch.equal(got, want), (
            f"p={p}: expected to keep tokens {sorted(kept)}, kept {got.nonzero().flatten().tolist()}; sort by "
            "probability, keep a token while the mass of the tokens before it is below p")
    print("✓ top-p: the smallest set of likely tokens whose mass reaches p")


def check_repetition_penalty(fn) -> None:
    """fn(logits (V,), previous_ids list[int], penalty) -> new logits with CTRL's penalty applied
    once to every distinct previous token (positive logits divided, negative multiplied)."""
    logits = torch.tensor([3.0, -2.0, 0.5, -0.5, 1.0])
    got = fn(logits.clone(), [0, 1, 1, 3], 2.0)
    want = torch.tensor([1.5, -4.0, 0.5, -1.0, 1.0])
    assert torch.allclose(got, want), (
        f"expected {want.tolist()}, got {got.tolist()}; divide positive logits by the penalty, multiply negative "
        "ones, and penalise a repeated token once, not once per occurrence")
    assert torch.allclose(fn(logits.clone(), [0, 2], 1.0), logits), "penalty 1.0 must change nothing"
    print("✓ repetition penalty: seen tokens become less likely, whatever their sign")


def check_incremental_decode(fn, tokenizer) -> None:
    """fn(tokenizer, ids) -> list of text pieces, one per id, that never contain a broken
    character ('\\ufffd') and join to tokenizer.decode(ids)."""
    text = "MiniMind 说：你好，世界！ 123 🙂"
    ids = tokenizer.encode(text)
    pieces = fn(tokenizer, ids)
    assert len(pieces) == len(ids), f"return one piece per id ({len(ids)}), got {len(pieces)}"
    assert all("\ufffd" not in piece for piece in pieces), (
        "a piece contains '\\ufffd': hold text back while the decoded tail is an incomplete character")
    assert "".join(pieces) == tokenizer.decode(ids), "the pieces must join to the full decoded text"
    print("✓ incremental decoding: whole characters only, nothing lost")
