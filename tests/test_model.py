"""Invariants of the MiniMind transformer and its config (sizes, RoPE, causality, cache, GQA, MoE)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from minimind.config import PRESETS, YARN_ROPE_SCALING, MiniMindConfig, get_config
from minimind.model import (
    Attention,
    KVCache,
    MiniMind,
    MoEFeedForward,
    RMSNorm,
    apply_rotary,
    precompute_rope,
)


def build(name="tiny", seed=0, **overrides):
    torch.manual_seed(seed)
    return MiniMind(get_config(name, **overrides)).eval()


def random_ids(config, batch=2, length=12, seed=1):
    return torch.randint(3, config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "preset, expected",
    [("minimind2-small", 25_829_888), ("minimind2", 104_030_976), ("minimind2-moe", 145_029_760), ("minimind3", 63_912_192)],
)
def test_upstream_presets_have_upstream_parameter_counts(preset, expected):
    config = get_config(preset)
    assert config.num_parameters() == expected
    with torch.device("meta"):  # shapes only, no memory
        model = MiniMind(config)
    assert model.num_parameters() == expected
    assert round(expected / 1e6, 2) == {"minimind2-small": 25.83, "minimind2": 104.03,
                                        "minimind2-moe": 145.03, "minimind3": 63.91}[preset]


def test_intermediate_sizes_follow_upstream_rules():
    assert get_config("minimind2-small").intermediate_size == 1408
    assert get_config("minimind2-moe").intermediate_size == 1728
    assert get_config("minimind2").intermediate_size == 2048
    assert get_config("minimind3").intermediate_size == 2432
    assert get_config("minimind3").head_dim == 96


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_config_num_parameters_equals_model_parameters(preset):
    with torch.device("meta"):
        model = MiniMind(get_config(preset))
    assert model.num_parameters() == model.config.num_parameters()


def test_config_round_trips_through_config_json(tmp_path):
    config = get_config("tiny-moe", rope_scaling=dict(YARN_ROPE_SCALING), dropout=0.1)
    config.save(tmp_path)
    assert MiniMindConfig.load(tmp_path) == config
    assert MiniMindConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == config


def test_bad_config_values_are_rejected_with_clear_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown preset"):
        get_config("gpt-5")
    with pytest.raises(ValueError, match=r"unknown MiniMindConfig fields \['hiden_size'\]"):
        get_config("tiny", hiden_size=32)
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        get_config("tiny", num_key_value_heads=3)
    (tmp_path / "config.json").write_text('{"hidden_size": 64,\n "vocab_size": }')
    with pytest.raises(ValueError, match=r"config.json:2: invalid JSON"):
        MiniMindConfig.load(tmp_path)


# ----------------------------------------------------------------------------- state dict layout


def test_dense_state_dict_has_minimind2_keys_and_shapes():
    with torch.device("meta"):
        model = MiniMind(get_config("minimind2-small", num_hidden_layers=2))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {"model.embed_tokens.weight": (6400, 512), "model.norm.weight": (512,), "lm_head.weight": (6400, 512)}
    for i in range(2):
        p = f"model.layers.{i}."
        expected.update({
            p + "self_attn.q_proj.weight": (512, 512),
            p + "self_attn.k_proj.weight": (128, 512),
            p + "self_attn.v_proj.weight": (128, 512),
            p + "self_attn.o_proj.weight": (512, 512),
            p + "input_layernorm.weight": (512,),
            p + "post_attention_layernorm.weight": (512,),
            p + "mlp.gate_proj.weight": (1408, 512),
            p + "mlp.up_proj.weight": (1408, 512),
            p + "mlp.down_proj.weight": (512, 1408),
        })
    assert shapes == expected
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_qk_norm_and_moe_state_dicts_have_upstream_keys():
    with torch.device("meta"):
        v3 = MiniMind(get_config("minimind3", num_hidden_layers=1))
        moe = MiniMind(get_config("minimind2-moe", num_hidden_layers=1))
    v3_shapes = {k: tuple(v.shape) for k, v in v3.state_dict().items()}
    assert v3_shapes["model.layers.0.self_attn.q_norm.weight"] == (96,)
    assert v3_shapes["model.layers.0.self_attn.k_norm.weight"] == (96,)
    assert v3_shapes["model.layers.0.self_attn.k_proj.weight"] == (384, 768)
    moe_keys = {k: tuple(v.shape) for k, v in moe.state_dict().items() if ".mlp." in k}
    assert moe_keys["model.layers.0.mlp.gate.weight"] == (4, 640)
    assert {k.split(".mlp.")[1] for k in moe_keys} == {"gate.weight"} | {
        f"{group}.{e}.{proj}_proj.weight"
        for group, count in (("experts", 4), ("shared_experts", 1))
        for e in range(count)
        for proj in ("gate", "up", "down")
    }


# ----------------------------------------------------------------------------- components


def test_rmsnorm_equals_torch_rmsnorm():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 32)
    ours = RMSNorm(32, eps=1e-5)
    reference = torch.nn.RMSNorm(32, eps=1e-5)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        reference.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), reference(x), atol=1e-6, rtol=1e-5)


def test_rope_attention_scores_depend_only_on_relative_position():
    head_dim = 16
    cos, sin = precompute_rope(head_dim, 200, theta=1e4)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, head_dim), torch.randn(1, 1, 1, head_dim)

    def score(query_pos, key_pos):
        q_rot, _ = apply_rotary(q, q, cos[query_pos : query_pos + 1], sin[query_pos : query_pos + 1])
        _, k_rot = apply_rotary(k, k, cos[key_pos : key_pos + 1], sin[key_pos : key_pos + 1])
        return (q_rot * k_rot).sum().item()

    for offset in (0, 3, 17):
        base = score(5 + offset, 2)
        for shift in (1, 40, 150):
            assert score(5 + offset + shift, 2 + shift) == pytest.approx(base, abs=1e-4)
    assert score(9, 2) != pytest.approx(score(5, 2), abs=1e-3)  # different distance → different score


def test_rope_rotation_preserves_vector_length():
    cos, sin = precompute_rope(32, 64)
    x = torch.randn(1, 2, 64, 32)
    rotated, _ = apply_rotary(x, x, cos, sin)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))


def rotation_per_position(cos, sin):
    """The angle each channel pair turns by per position (atan2 stays precise for tiny angles)."""
    half = cos.size(-1) // 2
    return torch.atan2(sin[1, :half], cos[1, :half])


def test_yarn_slows_only_low_frequency_channels():
    plain_freq = rotation_per_position(*precompute_rope(64, 4096, 1e6))
    yarn_freq = rotation_per_position(*precompute_rope(64, 4096, 1e6, YARN_ROPE_SCALING))
    torch.testing.assert_close(yarn_freq[:5], plain_freq[:5])  # fast channels untouched
    torch.testing.assert_close(yarn_freq[-5:], plain_freq[-5:] / 16, rtol=1e-3, atol=1e-9)  # slow ones ÷ factor
    # without an extended context (end <= original), YaRN changes nothing
    torch.testing.assert_close(precompute_rope(64, 2048, 1e6, YARN_ROPE_SCALING)[0], precompute_rope(64, 2048, 1e6)[0])


def test_yarn_matches_transformers_rope_init():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = transformers.LlamaConfig(
        hidden_size=512, num_attention_heads=8, max_position_embeddings=32768,
        rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 16.0,
                         "original_max_position_embeddings": 2048, "beta_fast": 32.0,
                         "beta_slow": 1.0, "attention_factor": 1.0},
    )
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](config, "cpu")
    ours = rotation_per_position(*precompute_rope(64, 32768, 1e6, YARN_ROPE_SCALING))
    torch.testing.assert_close(ours, inv_freq.float(), rtol=1e-4, atol=1e-7)
    assert attention_factor == 1.0


def test_explicit_attention_equals_sdpa_and_weights_are_causal_distributions():
    model = build()
    ids = random_ids(model.config)
    fast = model(ids)
    explicit = model(ids, return_attentions=True)
    torch.testing.assert_close(explicit.logits, fast.logits, atol=1e-5, rtol=1e-5)
    weights = explicit.attentions[0]  # (B, H, T, T)
    assert weights.shape == (2, 4, 12, 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 12))
    assert torch.all(weights.triu(diagonal=1) == 0)


def test_changing_a_future_token_never_changes_earlier_logits():
    for name in ("tiny", "tiny-moe"):
        model = build(name)
        ids = random_ids(model.config, length=16)
        changed = ids.clone()
        changed[:, 10] = (changed[:, 10] + 7) % model.config.vocab_size
        before, after = model(ids).logits, model(changed).logits
        torch.testing.assert_close(before[:, :10], after[:, :10], atol=0, rtol=0)
        assert not torch.allclose(before[:, 10:], after[:, 10:])


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_cached_decoding_equals_full_recomputation(name):
    model = build(name, qk_norm=True)
    ids = random_ids(model.config, length=20)
    full = model(ids).logits
    out = model(ids[:, :7], use_cache=True)
    pieces = [out.logits]
    for t in range(7, 13):  # one token per step
        out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
        pieces.append(out.logits)
    out = model(ids[:, 13:], cache=out.cache, use_cache=True)  # a chunk after a past
    pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert out.cache.length == 20


def test_kv_cache_writes_in_place_and_grows_by_doubling():
    model = build()
    config = model.config
    ids = random_ids(config, length=40)
    cache = KVCache(config, batch_size=2, max_len=16)
    first_buffer = cache.keys[0].data_ptr()
    out = model(ids[:, :4], cache=cache)
    for t in range(4, 16):
        out = model(ids[:, t : t + 1], cache=cache)
        assert cache.keys[0].data_ptr() == first_buffer  # no reallocation while it fits
    assert cache.capacity == 16
    for t in range(16, 40):
        out = model(ids[:, t : t + 1], cache=cache)
    assert cache.capacity == 64  # 16 → 32 → 64
    torch.testing.assert_close(out.logits[:, -1], model(ids).logits[:, -1], atol=1e-5, rtol=1e-5)


def test_left_padded_rows_match_their_unpadded_versions_with_and_without_cache():
    model = build()
    config = model.config
    short, long = random_ids(config, 1, 5, seed=2)[0], random_ids(config, 1, 9, seed=3)[0]
    pad = config.pad_token_id
    batch = torch.stack([torch.cat([torch.full((4,), pad), short]), long])
    mask = torch.tensor([[0] * 4 + [1] * 5, [1] * 9])

    padded = model(batch, attention_mask=mask).logits
    torch.testing.assert_close(padded[0, 4:], model(short[None]).logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded[1], model(long[None]).logits[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(padded).all()

    # greedy-style continuation: the cache must keep each row's own positions
    next_tokens = random_ids(config, 2, 3, seed=4)
    out = model(batch, attention_mask=mask, use_cache=True)
    for t in range(3):
        mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
        out = model(next_tokens[:, t : t + 1], attention_mask=mask, cache=out.cache, use_cache=True)
    reference_short = model(torch.cat([short, next_tokens[0]])[None]).logits[0, -1]
    reference_long = model(torch.cat([long, next_tokens[1]])[None]).logits[0, -1]
    torch.testing.assert_close(out.logits[0, -1], reference_short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits[1, -1], reference_long, atol=1e-5, rtol=1e-5)


def test_explicit_position_ids_override_the_default_positions():
    model = build()
    ids = random_ids(model.config, 1, 6)
    shifted = model(ids, position_ids=torch.arange(10, 16)[None]).logits
    assert not torch.allclose(shifted, model(ids).logits)
    # relative positions are all attention sees, so one token alone gives the same logits anywhere
    one = ids[:, :1]
    torch.testing.assert_close(model(one, position_ids=torch.tensor([[50]])).logits, model(one).logits)


def test_position_beyond_the_rope_table_is_a_clear_error():
    model = build()
    ids = torch.ones(1, model.config.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="beyond max_position_embeddings"):
        model(ids)


def test_grouped_query_attention_equals_multi_head_attention_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa_config = get_config("tiny", num_attention_heads=4, num_key_value_heads=2)
    mha_config = get_config("tiny", num_attention_heads=4, num_key_value_heads=4)
    gqa, mha = Attention(gqa_config), Attention(mha_config)
    d, group = gqa_config.head_dim, 2
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):  # query head j reads KV head j // group
            heads = getattr(gqa, name).weight.view(2, d, -1)
            getattr(mha, name).weight.copy_(heads.repeat_interleave(group, dim=0).reshape(4 * d, -1))
    x = torch.randn(2, 7, gqa_config.hidden_size)
    cos, sin = precompute_rope(d, 7)
    torch.testing.assert_close(gqa(x, cos, sin)[0], mha(x, cos, sin)[0], atol=1e-6, rtol=1e-5)


def test_multi_head_attention_equals_torch_multihead_attention_without_rope():
    torch.manual_seed(0)
    config = get_config("tiny", num_key_value_heads=4)
    ours = Attention(config)
    h = config.hidden_size
    reference = torch.nn.MultiheadAttention(h, config.num_attention_heads, bias=False, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        reference.out_proj.weight.copy_(ours.o_proj.weight)
    x = torch.randn(2, 9, h)
    no_rotation = (torch.ones(9, config.head_dim), torch.zeros(9, config.head_dim))
    expected, _ = reference(x, x, x, attn_mask=torch.ones(9, 9, dtype=torch.bool).triu(1), need_weights=False)
    torch.testing.assert_close(ours(x, *no_rotation)[0], expected, atol=1e-5, rtol=1e-5)


def test_loss_is_shifted_cross_entropy_ignoring_minus_100():
    model = build()
    ids = random_ids(model.config)
    labels = ids.clone()
    labels[0, :5] = -100
    out = model(ids, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, model.config.vocab_size), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    assert out.aux_loss.item() == 0.0  # dense model


def test_logits_to_keep_returns_the_last_positions():
    model = build()
    ids = random_ids(model.config)
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, model(ids).logits[:, -1:])
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(ids, labels=ids, logits_to_keep=1)


def test_logits_at_returns_the_selected_positions_in_row_major_order():
    model = build()
    ids = random_ids(model.config)
    where = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    selected = model(ids, logits_at=where).logits
    assert selected.shape == (int(where.sum()), model.config.vocab_size)
    torch.testing.assert_close(selected, model(ids).logits[where])
    for bad in (where[:, :-1], where.long()):
        with pytest.raises(ValueError, match="logits_at must be a bool tensor"):
            model(ids, logits_at=bad)
    with pytest.raises(ValueError, match="logits_at cannot be combined"):
        model(ids, labels=ids, logits_at=where)


def test_a_loss_on_selected_logits_has_the_gradients_of_the_loss_on_all_of_them():
    # the speed-up of SFT-style losses must not change what is learned
    from minimind.losses import masked_cross_entropy, supervised_targets

    model = build()
    ids = random_ids(model.config)
    labels = ids.clone()
    labels[:, : ids.size(1) // 2] = -100  # the prompt half is unsupervised
    masked_cross_entropy(model(ids).logits, labels).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    where, targets = supervised_targets(labels)
    assert int(where.sum()) == int((labels[:, 1:] != -100).sum())
    F.cross_entropy(model(ids, logits_at=where).logits, targets).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], msg=name)


def test_bad_attention_mask_shape_is_a_clear_error():
    model = build()
    ids = random_ids(model.config)
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(ids, attention_mask=torch.ones(2, 5))


# ----------------------------------------------------------------------------- mixture of experts


def reference_moe_aux(probs, topk_index, alpha, seq_aux):
    """The load-balancing loss written with explicit loops over sequences and experts."""
    B, T, E = probs.shape
    k = topk_index.shape[-1]
    if seq_aux:
        total = 0.0
        for b in range(B):
            for e in range(E):
                f = (topk_index[b] == e).sum().item() / (T * k / E)
                total += f * probs[b, :, e].mean().item()
        return alpha * total / B
    total = 0.0
    for e in range(E):
        f = E * (topk_index == e).sum().item() / (B * T * k)
        total += f * probs[..., e].mean().item()
    return alpha * total


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("seq_aux", [True, False])
def test_moe_aux_loss_matches_its_formula_for_any_top_k(top_k, seq_aux):
    torch.manual_seed(0)
    moe = MoEFeedForward(get_config("tiny-moe", num_experts_per_tok=top_k, seq_aux=seq_aux))
    x = torch.randn(3, 10, 64)
    _, aux = moe(x)
    probs, _, topk_index = moe.route(x)
    assert aux.shape == ()
    assert aux.item() == pytest.approx(reference_moe_aux(probs, topk_index, 0.01, seq_aux), rel=1e-5)


def test_moe_aux_loss_is_alpha_when_routing_is_perfectly_uniform():
    moe = MoEFeedForward(get_config("tiny-moe", num_experts_per_tok=2, seq_aux=False))
    probs = torch.full((1, 4, 4), 0.25)
    topk_index = torch.tensor([[[0, 1], [2, 3], [0, 1], [2, 3]]])
    assert moe.load_balancing_loss(probs, topk_index).item() == pytest.approx(0.01)


def test_moe_gate_weights_sum_to_one_and_output_equals_per_token_reference():
    torch.manual_seed(0)
    moe = MoEFeedForward(get_config("tiny-moe")).eval()
    x = torch.randn(2, 6, 64)
    probs, weights, index = moe.route(x)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 6))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 6))
    out, _ = moe(x)
    expected = torch.zeros_like(x)
    for b in range(2):
        for t in range(6):
            token = x[b, t]
            for slot in range(2):
                expected[b, t] += weights[b, t, slot] * moe.experts[int(index[b, t, slot])](token)
            expected[b, t] += moe.shared_experts[0](token)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_top1_router_gets_gradient_from_the_language_model_loss():
    torch.manual_seed(0)
    model = MiniMind(get_config("tiny-moe", num_experts_per_tok=1, aux_loss_alpha=0.0)).train()
    ids = random_ids(model.config)
    model(ids, labels=ids).loss.backward()
    router_grad = model.model.layers[0].mlp.gate.weight.grad
    assert router_grad is not None and router_grad.abs().sum() > 0


def test_idle_experts_still_receive_a_gradient_in_training():
    torch.manual_seed(0)
    model = MiniMind(get_config("tiny-moe", n_routed_experts=8, num_experts_per_tok=1)).train()
    ids = random_ids(model.config, batch=1, length=2)  # 2 tokens cannot reach all 8 experts
    out = model(ids, labels=ids)
    (out.loss + out.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_moe_model_sums_aux_loss_over_layers():
    model = build("tiny-moe")
    ids = random_ids(model.config)
    out = model(ids)
    per_layer = []
    hooks = [layer.mlp.register_forward_hook(lambda m, i, o: per_layer.append(o[1])) for layer in model.model.layers]
    model(ids)
    for hook in hooks:
        hook.remove()
    assert len(per_layer) == 2
    torch.testing.assert_close(out.aux_loss, sum(per_layer))
    assert out.aux_loss.item() > 0
