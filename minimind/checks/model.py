"""Self-checks for chapter 3 (the transformer): causal attention, grouped KV heads, RoPE, KV-cache size, MoE routing."""
import torch
import torch.nn.functional as F


def check_causal_attention(fn) -> None:
    """fn(q, k, v) -> causal scaled dot-product attention, q/k/v of shape (B, H, T, d)."""
    gen = torch.Generator().manual_seed(0)
    for shape in ((1, 1, 4, 8), (2, 3, 7, 16)):
        q, k, v = (torch.randn(*shape, generator=gen) for _ in range(3))
        got = fn(q, k, v)
        want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert got.shape == want.shape, f"output shape {tuple(got.shape)} should be {tuple(want.shape)}"
        if torch.allclose(got, F.scaled_dot_product_attention(q, k, v), atol=1e-4) and not torch.allclose(
            got, want, atol=1e-4
        ):
            raise AssertionError("position t must not see keys after t: mask scores above the diagonal with -inf")
        unscaled = torch.softmax((q @ k.transpose(-2, -1)).masked_fill(
            torch.ones(shape[2], shape[2], dtype=torch.bool).triu(1), float("-inf")), -1) @ v
        if torch.allclose(got, unscaled, atol=1e-4) and not torch.allclose(got, want, atol=1e-4):
            raise AssertionError("divide the scores by sqrt(d) before the softmax")
        assert torch.allclose(got, want, atol=1e-4), (
            "softmax(q·kᵀ/√d + causal mask) @ v over the last axis of the scores; the first row may only see key 0")
    print("✓ causal attention: equals torch's scaled_dot_product_attention(is_causal=True)")


def check_repeat_kv(fn) -> None:
    """fn(x, n_rep) -> x (B, KV, T, d) with each KV head repeated n_rep times: (B, KV*n_rep, T, d),
    query head j reading KV head j // n_rep."""
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    for n_rep in (1, 2, 4):
        got = fn(x, n_rep)
        want = x.repeat_interleave(n_rep, dim=1)
        assert got.shape == want.shape, f"n_rep={n_rep}: shape {tuple(got.shape)} should be {tuple(want.shape)}"
        if n_rep > 1 and torch.equal(got, x.repeat(1, n_rep, 1, 1)):
            raise AssertionError("heads are tiled (0,1,2,0,1,2); each head must repeat in place (0,0,1,1,2,2)")
        assert torch.equal(got, want), f"n_rep={n_rep}: query head j must read KV head j // n_rep"
    print("✓ repeat_kv: each KV head serves a contiguous group of query heads")


def check_rope(fn) -> None:
    """fn(x, positions, theta) -> x (T, d) rotated in rotate-half layout: channel pair (i, i + d/2)
    turned by angle position · theta^(-2i/d)."""
    from minimind.model import apply_rotary, precompute_rope

    gen = torch.Generator().manual_seed(1)
    for d, theta in ((8, 10000.0), (16, 1e6)):
        x = torch.randn(6, d, generator=gen)
        positions = torch.tensor([0, 1, 2, 7, 30, 100])
        cos, sin = precompute_rope(d, 101, theta)
        want, _ = apply_rotary(x, x, cos[positions], sin[positions])
        got = fn(x, positions, theta)
        assert got.shape == want.shape, f"shape {tuple(got.shape)} should be {tuple(want.shape)}"
        assert torch.allclose(got[0], x[0], atol=1e-5), "position 0 must leave the vector unchanged"
        assert torch.allclose(got.norm(dim=-1), x.norm(dim=-1), atol=1e-4), "a rotation keeps every vector's length"
        assert torch.allclose(got, want, atol=1e-4), (
            f"d={d}: pair channel i with channel i + d/2 (not 2i with 2i+1); "
            "frequency of pair i is theta ** (-2i / d)")
    print("✓ RoPE: rotate-half layout, same angles as minimind.model.apply_rotary")


def check_kv_cache_bytes(fn) -> None:
    """fn(config, num_tokens, bytes_per_value) -> bytes of keys + values for one sequence."""
    from minimind.config import get_config
    from minimind.model import KVCache

    for name, kv_heads, tokens in (("minimind2-small", 2, 512), ("minimind2-small", 8, 1000), ("minimind3", 4, 32768)):
        config = get_config(name, num_key_value_heads=kv_heads)
        cache = KVCache(config, batch_size=1, max_len=tokens, dtype=torch.float16, device="meta")
        want = cache.memory_bytes()
        got = fn(config, tokens, 2)
        if got == want:
            continue
        if got == want // 2:
            raise AssertionError("the cache stores keys AND values: count both")
        if got == want * config.num_key_value_groups:
            raise AssertionError("only the key/value heads are cached (num_key_value_heads), not every query head")
        raise AssertionError(
            f"{name} with {kv_heads} KV heads, {tokens} tokens: expected {want:,} bytes, got {got:,}; "
            "2 · layers · kv_heads · head_dim · tokens · bytes_per_value")
    print("✓ KV-cache size: 2 · layers · kv_heads · head_dim · tokens · bytes")


def check_top_k_routing(fn) -> None:
    """fn(router_logits (N, E), k) -> (weights (N, k), expert ids (N, k)): softmax over all experts,
    keep the top k, renormalise the kept weights to sum to 1 when k > 1."""
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(10, 6, generator=gen)
    for k in (1, 2, 3):
        weights, index = fn(logits, k)
        probs = logits.softmax(-1)
        want_weights, want_index = probs.topk(k, dim=-1)
        if k > 1:
            want_weights = want_weights / want_weights.sum(-1, keepdim=True)
        assert weights.shape == (10, k) and index.shape == (10, k), "one row per token, k columns"
        assert torch.equal(index, want_index), f"k={k}: choose the k experts with the largest router probability"
        if k == 1 and torch.allclose(weights, torch.ones_like(weights)):
            raise AssertionError(
                "k=1: keep the router probability as the weight; renormalising makes it 1 and the LM loss "
                "no longer trains the router")
        assert torch.allclose(weights, want_weights, atol=1e-5), (
            f"k={k}: weights are the softmax probabilities of the chosen experts"
            + (", divided by their sum" if k > 1 else ""))
    print("✓ top-k routing: softmax, top k, renormalised only when k > 1")
