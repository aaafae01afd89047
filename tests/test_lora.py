"""LoRA adapters: exactness at B = 0, merge/unmerge, frozen base, PEFT equivalence, save/load, several adapters."""
import copy
import json

import pytest
import torch
import torch.nn as nn

from minimind.config import get_config
from minimind.lora import (
    LoRALinear,
    TiedTokenRowsHead,
    TokenRowsEmbedding,
    apply_lora,
    base_fingerprint,
    load_lora,
    lora_layers,
    merge_lora,
    save_lora,
    set_active_adapter,
    unload_lora,
    unmerge_lora,
)
from minimind.model import MiniMind

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_model(seed: int = 0) -> MiniMind:
    torch.manual_seed(seed)
    return MiniMind(get_config("tiny")).eval()


def randomise_adapters(model: nn.Module, name: str = "default", seed: int = 1) -> None:
    """B starts at zero; give it values so the adapter actually changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            if isinstance(layer, LoRALinear) and name in layer.lora_B:
                b = layer.lora_B[name]
                b.copy_(torch.randn(b.shape, generator=generator) * 0.05)


def token_batch(seed: int = 0, batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(3, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_fresh_adapter_with_zero_B_gives_exactly_the_base_model():
    model = tiny_model()
    ids = token_batch()
    before = model(ids).logits
    apply_lora(model, rank=4, alpha=8)
    after = model(ids).logits
    assert torch.equal(before, after)


def test_apply_lora_wraps_every_target_and_keeps_the_base_state_dict_keys():
    model = tiny_model()
    base_keys = set(model.state_dict())
    apply_lora(model, rank=4, alpha=8)
    layers = lora_layers(model)
    config = model.config
    assert len(layers) == config.num_hidden_layers * len(ALL_PROJECTIONS)
    assert {name.rsplit(".", 1)[-1] for name in layers} == set(ALL_PROJECTIONS)
    assert "lm_head" not in layers  # the tied head is not a default target
    adapted_keys = set(model.state_dict())
    assert base_keys <= adapted_keys
    assert {k for k in adapted_keys - base_keys if ".lora_" not in k} == set()


def test_only_adapter_parameters_are_trainable_and_receive_gradients():
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8)
    randomise_adapters(model)
    ids = token_batch()
    model(ids, labels=ids).loss.backward()
    for name, parameter in model.named_parameters():
        is_adapter = ".lora_A." in name or ".lora_B." in name
        assert parameter.requires_grad == is_adapter, name
        if is_adapter:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_merged_adapter_gives_the_same_outputs_and_unmerge_restores_the_base_weights_exactly():
    model = tiny_model()
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    fingerprint = base_fingerprint(model)
    apply_lora(model, rank=4, alpha=8)
    randomise_adapters(model)
    ids = token_batch()
    unmerged = model(ids).logits
    merge_lora(model)
    assert all(layer.merged_adapter == "default" for layer in lora_layers(model).values())
    merged = model(ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(merged, MiniMind(model.config).eval()(ids).logits)
    unmerge_lora(model)
    for key, weight in base_weights.items():
        assert torch.equal(model.state_dict()[key], weight), f"{key} not restored exactly"
    assert torch.equal(model(ids).logits, unmerged)
    assert base_fingerprint(model) == fingerprint  # so the adapter can still be saved and reloaded


def test_unload_after_merge_is_a_plain_model_with_the_adapted_outputs():
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8)
    randomise_adapters(model)
    ids = token_batch()
    adapted = model(ids).logits
    merge_lora(model)
    unload_lora(model)
    assert not lora_layers(model)
    plain = MiniMind(model.config).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(plain(ids).logits, adapted, rtol=1e-5, atol=1e-5)


def test_lora_linear_matches_the_formula_with_alpha_scaling():
    torch.manual_seed(0)
    linear = nn.Linear(6, 5)
    layer = LoRALinear.from_linear(linear)
    layer.add_adapter("a", rank=2, alpha=6.0)
    layer.set_active("a")
    with torch.no_grad():
        layer.lora_B["a"].normal_()
    x = torch.randn(3, 6)
    expected = linear(x) + (6.0 / 2) * x @ layer.lora_A["a"].T @ layer.lora_B["a"].T
    torch.testing.assert_close(layer(x), expected)
    assert layer.weight is linear.weight  # wrapping shares the base weight, no copy


def test_dropout_acts_on_the_adapter_input_only_in_training():
    torch.manual_seed(0)
    layer = LoRALinear.from_linear(nn.Linear(16, 8))
    layer.add_adapter("a", rank=4, alpha=4.0, dropout=0.5)
    layer.set_active("a")
    with torch.no_grad():
        layer.lora_B["a"].normal_()
    x = torch.randn(64, 16)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    # an adapter added to a layer already in eval mode starts in eval mode too
    frozen = LoRALinear.from_linear(nn.Linear(16, 8).eval())
    assert not frozen.training
    frozen.add_adapter("b", rank=4, alpha=4.0, dropout=0.5)
    frozen.set_active("b")
    with torch.no_grad():
        frozen.lora_B["b"].normal_()
    assert torch.equal(frozen(x), frozen(x))
    # base path is never dropped: with the adapter off, training mode changes nothing
    layer.set_active(None)
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_outputs_and_gradients_equal_peft_lora_with_the_same_weights():
    from peft import LoraConfig, inject_adapter_in_model

    rank, alpha = 4, 12
    ours = tiny_model()
    theirs = copy.deepcopy(ours)
    apply_lora(ours, rank=rank, alpha=alpha, targets=ALL_PROJECTIONS)
    randomise_adapters(ours)
    inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(ALL_PROJECTIONS)), theirs
    )
    theirs_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for module_name, layer in lora_layers(ours).items():
            theirs_params[f"{module_name}.lora_A.default.weight"].copy_(layer.lora_A["default"])
            theirs_params[f"{module_name}.lora_B.default.weight"].copy_(layer.lora_B["default"])
    ids = token_batch()
    ours_out, theirs_out = ours(ids, labels=ids), theirs(ids, labels=ids)
    torch.testing.assert_close(ours_out.logits, theirs_out.logits, rtol=1e-5, atol=1e-6)
    ours_out.loss.backward()
    theirs_out.loss.backward()
    for module_name, layer in lora_layers(ours).items():
        for which in ("A", "B"):
            ours_grad = getattr(layer, f"lora_{which}")["default"].grad
            theirs_grad = theirs_params[f"{module_name}.lora_{which}.default.weight"].grad
            torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-7)


def test_save_then_load_reproduces_the_adapted_model(tmp_path):
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8, targets=("q_proj", "o_proj"))
    randomise_adapters(model)
    ids = token_batch()
    expected = model(ids).logits
    save_lora(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["rank"] == 4 and config["alpha"] == 8 and config["targets"] == ["o_proj", "q_proj"]
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "adapter" / "adapter.safetensors"))
    assert all(".lora_" in key for key in saved)  # adapter weights alone, not the base model
    fresh = tiny_model()
    assert load_lora(fresh, tmp_path / "adapter") == "default"
    torch.testing.assert_close(fresh(ids).logits, expected, rtol=0, atol=0)
    # loading is for inference: the adapter comes in frozen and the base keeps its own requires_grad
    assert all(p.requires_grad == (".lora_" not in n) for n, p in fresh.named_parameters())


def test_loading_an_adapter_onto_a_different_base_model_fails_clearly(tmp_path):
    model = tiny_model(seed=0)
    apply_lora(model, rank=4, alpha=8)
    save_lora(model, tmp_path / "adapter")
    other = tiny_model(seed=1)
    with pytest.raises(ValueError, match="different base model"):
        load_lora(other, tmp_path / "adapter")
    assert not lora_layers(other)  # nothing was changed on the refused model


def test_saving_while_merged_is_refused(tmp_path):
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8)
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge_lora"):
        save_lora(model, tmp_path / "adapter")


def test_two_named_adapters_load_side_by_side_and_switch(tmp_path):
    ids = token_batch()
    outputs = {}
    for name, seed in (("identity", 1), ("domain", 2)):
        model = tiny_model()
        apply_lora(model, rank=4, alpha=8, name=name)
        randomise_adapters(model, name, seed=seed)
        outputs[name] = model(ids).logits
        save_lora(model, tmp_path / name, name=name)
    base_out = tiny_model()(ids).logits
    model = tiny_model()
    fingerprint = base_fingerprint(model)
    load_lora(model, tmp_path / "identity")
    load_lora(model, tmp_path / "domain")
    assert base_fingerprint(model) == fingerprint
    for name in ("identity", "domain"):
        set_active_adapter(model, name)
        torch.testing.assert_close(model(ids).logits, outputs[name], rtol=1e-6, atol=1e-6)
    set_active_adapter(model, None)
    assert torch.equal(model(ids).logits, base_out)
    # switching away from a merged adapter unmerges it first
    set_active_adapter(model, "identity")
    merge_lora(model)
    set_active_adapter(model, "domain")
    torch.testing.assert_close(model(ids).logits, outputs["domain"], rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="no adapter named 'missing'"):
        set_active_adapter(model, "missing")


def test_bad_arguments_and_files_give_clear_errors(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match="no nn.Linear named \\['qkv'\\]"):
        apply_lora(model, targets=("qkv",))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        apply_lora(tiny_model(), rank=0)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_lora(model, tmp_path)
    apply_lora(model, rank=4, alpha=8)
    save_lora(model, tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").write_text('{"rank": 4,\n  oops}')
    with pytest.raises(ValueError, match="adapter_config.json:2: not valid JSON"):
        load_lora(tiny_model(), tmp_path / "a")


def test_chapter_checks_accept_the_reference_and_reject_common_mistakes():
    from minimind.checks.lora import check_lora_forward, check_lora_parameter_count, check_merge

    check_lora_parameter_count(lambda fan_in, fan_out, rank: rank * (fan_in + fan_out))
    check_lora_forward(lambda x, w, a, b, alpha: x @ w.T + alpha / a.shape[0] * (x @ a.T @ b.T))
    check_merge(lambda w, a, b, alpha: w + alpha / a.shape[0] * b @ a)
    for check, wrong, hint in (
        (check_lora_parameter_count, lambda fan_in, fan_out, rank: fan_in * fan_out, "rank"),
        (check_lora_forward, lambda x, w, a, b, alpha: x @ w.T + alpha * (x @ a.T @ b.T), "alpha / rank"),
        (check_merge, lambda w, a, b, alpha: w.add_(alpha / a.shape[0] * b @ a), "in place"),
    ):
        with pytest.raises(AssertionError, match=hint):
            check(wrong)


# --- trainable token rows --------------------------------------------------------------------------

TEA_ROWS = (7, 42, 200)


def randomise_token_rows(model: nn.Module, name: str = "default", seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            if isinstance(layer, TokenRowsEmbedding) and layer.has_adapter(name):
                delta = layer.lora_token_delta[name]
                delta.copy_(torch.randn(delta.shape, generator=generator))


def test_trainable_token_rows_start_as_the_base_and_change_only_their_rows_in_and_out():
    model = tiny_model()
    assert model.config.tie_word_embeddings
    ids = token_batch()
    before = model(ids).logits
    apply_lora(model, rank=4, alpha=8, trainable_tokens=TEA_ROWS)
    assert torch.equal(model(ids).logits, before)  # deltas start at zero
    assert isinstance(model.model.embed_tokens, TokenRowsEmbedding)
    assert isinstance(model.lm_head, TiedTokenRowsHead) and model.lm_head.weight is model.model.embed_tokens.weight
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "model.embed_tokens.lora_token_delta.default" in trainable
    assert "model.embed_tokens.weight" not in trainable
    randomise_token_rows(model)
    # rows outside the adapter's ids embed exactly as before; the head writes them exactly as before
    # when the hidden state is the same, and writes the trained tokens differently
    plain = torch.tensor([[3, 5, 8, 9]])
    embedding = model.model.embed_tokens
    torch.testing.assert_close(embedding(plain), tiny_model().model.embed_tokens(plain), rtol=0, atol=0)
    assert not torch.equal(embedding(torch.tensor([list(TEA_ROWS)])), tiny_model().model.embed_tokens(torch.tensor([list(TEA_ROWS)])))
    hidden = torch.randn(2, 5, model.config.hidden_size)
    base_head = tiny_model().lm_head
    other = [t for t in range(model.config.vocab_size) if t not in TEA_ROWS]
    torch.testing.assert_close(model.lm_head(hidden)[..., other], base_head(hidden)[..., other], rtol=0, atol=0)
    assert not torch.allclose(model.lm_head(hidden)[..., list(TEA_ROWS)], base_head(hidden)[..., list(TEA_ROWS)])


def test_trainable_token_rows_equal_peft_trainable_tokens_in_outputs_and_gradients():
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    ours = tiny_model()
    theirs = tiny_model()
    apply_lora(ours, rank=4, alpha=8, targets=("q_proj",), trainable_tokens=TEA_ROWS)
    randomise_token_rows(ours)
    # PEFT stores the rows' new values; ours stores their change from the base rows
    embedding = TrainableTokensLayer(theirs.model.embed_tokens, "default")
    embedding.update_layer("default", token_indices=list(TEA_ROWS))
    head = TrainableTokensLayer(theirs.lm_head, "default", tied_adapter=embedding)
    theirs.model.embed_tokens, theirs.lm_head = embedding, head
    delta = ours.model.embed_tokens.lora_token_delta["default"]
    with torch.no_grad():
        embedding.trainable_tokens_delta["default"].copy_(embedding.trainable_tokens_original["default"] + delta)
    set_active_adapter(ours, None)
    q_off = [layer for layer in lora_layers(ours).values() if isinstance(layer, LoRALinear)]
    for layer in q_off:  # compare the token rows alone: the q_proj adapter stays off
        layer.set_active(None)
    ours.model.embed_tokens.set_active("default")
    ids = torch.tensor([[7, 3, 42, 200, 9, 7, 11]])
    ours_out, theirs_out = ours(ids, labels=ids), theirs(ids, labels=ids)
    torch.testing.assert_close(ours_out.logits, theirs_out.logits, rtol=1e-5, atol=1e-5)
    ours_out.loss.backward()
    theirs_out.loss.backward()
    torch.testing.assert_close(delta.grad, embedding.trainable_tokens_delta["default"].grad, rtol=1e-4, atol=1e-6)


def test_token_rows_save_load_merge_unload_and_switch(tmp_path):
    ids = torch.tensor([[7, 3, 42, 200, 9, 7, 11]])
    base_out = tiny_model()(ids).logits
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8, name="tea", trainable_tokens=TEA_ROWS)
    randomise_adapters(model, "tea")
    randomise_token_rows(model, "tea")
    expected = model(ids).logits
    save_lora(model, tmp_path / "tea", name="tea")
    config = json.loads((tmp_path / "tea" / "adapter_config.json").read_text())
    assert config["trainable_tokens"] == sorted(TEA_ROWS)
    fresh = tiny_model()
    fingerprint = base_fingerprint(fresh)
    assert load_lora(fresh, tmp_path / "tea") == "tea"
    assert base_fingerprint(fresh) == fingerprint  # the rows' deltas are the adapter's, not the base's
    torch.testing.assert_close(fresh(ids).logits, expected, rtol=0, atol=0)
    # a second adapter without rows: switching to it runs the base embedding
    apply_lora(fresh, rank=2, alpha=2, name="plain", targets=("q_proj",))
    torch.testing.assert_close(fresh(ids).logits, base_out, rtol=0, atol=0)  # its B is zero
    set_active_adapter(fresh, "tea")
    merge_lora(fresh)
    torch.testing.assert_close(fresh(ids).logits, expected, rtol=1e-5, atol=1e-5)
    unmerge_lora(fresh)
    assert base_fingerprint(fresh) == fingerprint  # unmerging restores the shared weight bit for bit
    merge_lora(fresh)
    unload_lora(fresh)
    assert type(fresh.model.embed_tokens) is nn.Embedding and type(fresh.lm_head) is nn.Linear
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight
    assert set(fresh.state_dict()) == set(tiny_model().state_dict())
    torch.testing.assert_close(fresh(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_an_adapter_saved_before_token_rows_existed_still_loads(tmp_path):
    model = tiny_model()
    apply_lora(model, rank=4, alpha=8)
    save_lora(model, tmp_path / "old")
    config_path = tmp_path / "old" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    del config["trainable_tokens"]
    config_path.write_text(json.dumps(config))
    fresh = tiny_model()
    load_lora(fresh, tmp_path / "old")
    assert not isinstance(fresh.model.embed_tokens, TokenRowsEmbedding)


def test_bad_trainable_tokens_are_refused():
    with pytest.raises(ValueError, match=r"lie in \[0, "):
        apply_lora(tiny_model(), trainable_tokens=(10**6,))


def test_word_token_ids_cover_both_spellings(book_tokenizer):
    from minimind.train.lora import word_token_ids

    ids = word_token_ids(book_tokenizer, ["Sencha"])
    assert set(book_tokenizer.encode("Sencha")) <= set(ids) and set(book_tokenizer.encode(" Sencha")) <= set(ids)
    assert ids == sorted(set(ids))
