"""Self-checks for chapters 4 and 5 (pretraining, SFT): the next-token loss, the learning-rate
schedule, packing documents into chunks, and SFT labels from a loss mask."""
import math

import torch
import torch.nn.functional as F

from minimind.losses import IGNORE_INDEX


def check_next_token_loss(fn) -> None:
    """fn(logits (B, T, V), labels (B, T)) -> scalar: mean cross-entropy of logits[:, t-1] against
    labels[:, t] over every t >= 1 whose label is not -100 (labels are unshifted)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=generator)
    labels = torch.randint(0, 11, (2, 6), generator=generator)
    labels[1, 4:] = IGNORE_INDEX
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    unshifted = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    got = fn(logits.clone(), labels.clone())
    assert isinstance(got, torch.Tensor) and got.dim() == 0, "return a scalar tensor"
    if torch.isclose(got, unshifted, atol=1e-5):
        raise AssertionError("logits[t] predicts token t+1: compare logits[:, :-1] with labels[:, 1:]")
    backwards = F.cross_entropy(logits[:, 1:].reshape(-1, 11), labels[:, :-1].reshape(-1), ignore_index=IGNORE_INDEX)
    if torch.isclose(got, backwards, atol=1e-5):
        raise AssertionError("shifted the wrong way: logits[:, :-1] (all but the last) go with labels[:, 1:]")
    masked_mean_with_padding = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].clamp(min=0).reshape(-1))
    if torch.isclose(got, masked_mean_with_padding, atol=1e-5):
        raise AssertionError("positions labelled -100 must not count (ignore_index=-100)")
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX,
                                reduction="none").view(2, 5)
    supervised = (labels[:, 1:] != IGNORE_INDEX).float()
    if torch.isclose(got, per_token.sum() / per_token.numel(), atol=1e-5):
        raise AssertionError("divide by the number of supervised positions, not by every position")
    if torch.isclose(got, ((per_token * supervised).sum(1) / supervised.sum(1)).mean(), atol=1e-5):
        raise AssertionError("average over every supervised token of the batch, not per sequence and then over sequences")
    assert torch.isclose(got, expected, atol=1e-5), f"expected {expected.item():.5f}, got {got.item():.5f}"
    print("✓ next-token loss: shifted by one, -100 ignored, mean over supervised positions")


def check_lr_schedule(fn) -> None:
    """fn(step, total_steps, peak_lr, warmup_steps, min_lr_ratio) -> lr: linear warm-up to the peak
    over `warmup_steps` (step 0 gets peak/warmup), then half a cosine from the peak at step
    `warmup_steps` to peak*min_lr_ratio at the last step, `total_steps - 1`."""
    from minimind.train import TrainConfig, learning_rate_at

    cases = [(100, 1e-3, 10, 0.1), (50, 3e-3, 0, 0.0), (20, 5e-4, 5, 0.5)]
    for total, peak, warmup, ratio in cases:
        config = TrainConfig(lr=peak, warmup_steps=warmup, min_lr_ratio=ratio)
        for step in range(total):
            expected = learning_rate_at(step, total, config)
            got = fn(step, total, peak, warmup, ratio)
            if step < warmup and math.isclose(got, peak * step / warmup, rel_tol=1e-6) and not math.isclose(got, expected):
                raise AssertionError("warm-up starts at peak/warmup for step 0 (step+1 steps done), not at 0")
            if not math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-12):
                first, last = fn(0, total, peak, warmup, ratio), fn(total - 1, total, peak, warmup, ratio)
                if math.isclose(first, peak, rel_tol=1e-6) and math.isclose(last, peak, rel_tol=1e-6):
                    raise AssertionError("the learning rate stays at the peak: warm up linearly over `warmup_steps`, "
                                         "then decay along half a cosine to peak * min_lr_ratio")
                if ratio and math.isclose(last, 0.0, abs_tol=1e-12):
                    raise AssertionError("the cosine ends at the floor peak * min_lr_ratio, not at 0")
            assert math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-12), (
                f"step {step} of {total} (peak {peak}, warm-up {warmup}, floor ratio {ratio}): "
                f"expected {expected:.6g}, got {got:.6g}")
    print(f"✓ learning-rate schedule matches on {len(cases)} settings, every step")


def check_packing(fn) -> None:
    """fn(documents: list of lists of ids, seq_len, bos, eos) -> list of chunks: `[bos] + doc + [eos]`
    for every document, concatenated in order, cut into full chunks of seq_len (the tail dropped)."""
    cases = [([[5, 6], [7], [8, 9, 10]], 4, 1, 2), ([[3] * 7], 3, 1, 2), ([[4, 4]], 5, 1, 2)]
    for documents, seq_len, bos, eos in cases:
        stream = [t for doc in documents for t in (bos, *doc, eos)]
        expected = [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
        got = [list(chunk) for chunk in fn([list(d) for d in documents], seq_len, bos, eos)]
        if got and len(got[-1]) < seq_len:
            raise AssertionError("drop the last, partial chunk: every chunk must hold exactly seq_len tokens")
        for name, marker, kept in (("eos", eos, lambda t: t != eos), ("bos", bos, lambda t: t != bos)):
            without = [t for t in stream if kept(t)]
            if got != expected and got == [without[i:i + seq_len] for i in range(0, len(without) - seq_len + 1, seq_len)]:
                raise AssertionError(f"every document needs its markers: [bos] + doc + [eos]; {name} ({marker}) is missing")
        assert got == expected, f"documents {documents}, seq_len {seq_len}: expected {expected}, got {got}"
    print(f"✓ packing is right on {len(cases)} cases (document markers, chunk boundaries, dropped tail)")


def check_sft_labels(fn) -> None:
    """fn(ids, mask, max_len) -> (input_ids, labels) as lists: both cut to max_len, labels = the id
    where mask is 1 and -100 where it is 0."""
    cases = [([1, 10, 11, 2, 1, 12, 2], [0, 0, 0, 0, 0, 1, 1], 16),
             ([1, 10, 2, 1, 13, 14, 2, 1, 15, 2], [0, 0, 0, 0, 1, 1, 1, 0, 1, 1], 6),
             ([1, 10, 2], [0, 0, 0], 8)]
    for ids, mask, max_len in cases:
        expected_ids = ids[:max_len]
        expected_labels = [i if m else IGNORE_INDEX for i, m in zip(ids, mask)][:max_len]
        got_ids, got_labels = fn(list(ids), list(mask), max_len)
        got_ids, got_labels = list(map(int, got_ids)), list(map(int, got_labels))
        if got_labels == [i if not m else IGNORE_INDEX for i, m in zip(ids, mask)][:max_len]:
            raise AssertionError("the mask marks what *is* supervised: keep ids where mask == 1")
        if got_labels != expected_labels and got_labels == expected_ids:
            raise AssertionError("labels equal input_ids: replace every position whose mask is 0 by -100")
        if got_labels == [i if m else 0 for i, m in zip(ids, mask)][:max_len]:
            raise AssertionError("unsupervised positions get -100 (the loss's ignore_index), not 0")
        if got_labels != expected_labels and got_labels[:-1] == expected_labels[1:]:
            raise AssertionError("do not shift the labels: labels[t] goes with ids[t]; the loss does the shift")
        assert len(got_ids) == len(got_labels) == len(expected_ids), "cut ids and labels to the same max_len"
        assert got_ids == expected_ids and got_labels == expected_labels, (
            f"ids {ids}, mask {mask}, max_len {max_len}: expected labels {expected_labels}, got {got_labels}")
    print(f"✓ SFT labels are right on {len(cases)} cases (assistant-only, truncation, nothing supervised)")
