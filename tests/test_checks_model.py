"""Chapter 3's self-checks accept correct solutions and reject the typical mistakes with a hint."""
import math

import pytest
import torch
import torch.nn.functional as F

from minimind.checks.model import (
    check_causal_attention,
    check_kv_cache_bytes,
    check_repeat_kv,
    check_rope,
    check_top_k_routing,
)
from minimind.model import apply_rotary, precompute_rope


def causal_attention(q, k, v, scale=True, causal=True):
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.size(-1)) if scale else 1.0)
    if causal:
        T = q.size(-2)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return scores.softmax(-1) @ v


def test_causal_attention_check(capsys):
    check_causal_attention(causal_attention)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="must not see keys after"):
        check_causal_attention(lambda q, k, v: causal_attention(q, k, v, causal=False))
    with pytest.raises(AssertionError, match="sqrt"):
        check_causal_attention(lambda q, k, v: causal_attention(q, k, v, scale=False))


def test_repeat_kv_check():
    check_repeat_kv(lambda x, n: x.repeat_interleave(n, dim=1))
    with pytest.raises(AssertionError, match="tiled"):
        check_repeat_kv(lambda x, n: x.repeat(1, n, 1, 1))


def test_rope_check():
    def rope(x, positions, theta):
        cos, sin = precompute_rope(x.size(-1), int(positions.max()) + 1, theta)
        return apply_rotary(x, x, cos[positions], sin[positions])[0]

    def interleaved(x, positions, theta):
        d = x.size(-1)
        angles = positions[:, None].float() * theta ** (-torch.arange(0, d, 2).float() / d)
        z = torch.complex(x[..., 0::2], x[..., 1::2]) * torch.polar(torch.ones_like(angles), angles)
        return torch.stack([z.real, z.imag], dim=-1).flatten(-2)

    check_rope(rope)
    with pytest.raises(AssertionError, match="pair channel i with channel i \\+ d/2"):
        check_rope(interleaved)


def test_kv_cache_bytes_check():
    def correct(config, tokens, nbytes):
        return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * tokens * nbytes

    check_kv_cache_bytes(correct)
    with pytest.raises(AssertionError, match="keys AND values"):
        check_kv_cache_bytes(lambda c, t, b: correct(c, t, b) // 2)
    with pytest.raises(AssertionError, match="not every query head"):
        check_kv_cache_bytes(lambda c, t, b: correct(c, t, b) * c.num_key_value_groups)


def test_top_k_routing_check():
    def routing(logits, k, normalise_top1=False):
        weights, index = logits.softmax(-1).topk(k, dim=-1)
        if k > 1 or normalise_top1:
            weights = weights / weights.sum(-1, keepdim=True)
        return weights, index

    check_top_k_routing(routing)
    with pytest.raises(AssertionError, match="no longer trains the router"):
        check_top_k_routing(lambda logits, k: routing(logits, k, normalise_top1=True))
    with pytest.raises(AssertionError, match="divided by their sum"):
        check_top_k_routing(lambda logits, k: logits.softmax(-1).topk(k, dim=-1))
