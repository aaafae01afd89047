"""Weight-only int8 (`minimind.quantize`): the per-channel quantiser's error bound, Int8Linear
against the dequantised matmul, which modules are replaced, greedy agreement with fp32 on a tiny
model, and the `--quantize` flag of the inference loader."""
import copy

import pytest
import torch
from torch import nn

from minimind.config import get_config
from minimind.model import MiniMind
from minimind.quantize import Int8Linear, greedy_agreement, quantize_int8, quantize_per_channel, quantized_modules
from inference_helpers import save_tiny_checkpoint, tiny_model


def test_per_channel_quantisation_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(48, 80) * torch.logspace(-3, 1, 48)[:, None]  # rows on very different scales
    q, scales = quantize_per_channel(w)
    assert q.dtype == torch.int8 and scales.shape == (48,) and int(q.abs().max()) == 127
    error = (q.float() * scales[:, None] - w).abs()
    assert bool((error <= scales[:, None] / 2 + 1e-7).all())


@pytest.mark.parametrize("shape", [(3, 64), (2, 5, 64), (1, 1, 64)])
@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_equals_the_dequantised_matmul(shape, bias):
    torch.manual_seed(1)
    linear = nn.Linear(64, 40, bias=bias)
    module = Int8Linear.from_linear(linear)
    x = torch.randn(*shape)
    expected = x @ module.dequantized_weight().t() + (linear.bias if bias else 0)
    out = module(x)
    assert out.shape == (*shape[:-1], 40)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert module.kernel == "int8pack"  # torch 2.13 has the CPU kernel: no fallback here
    # and it is close to the float layer (weights off by half a step at most)
    assert (out - linear(x)).abs().max() < 0.05


def test_int8_linear_in_bfloat16():
    torch.manual_seed(2)
    module = Int8Linear.from_linear(nn.Linear(64, 32, bias=False))
    x = torch.randn(4, 64)
    out = module(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), module(x), rtol=0.05, atol=0.05)


def test_every_decoder_linear_is_replaced_but_not_the_embedding_or_tied_head():
    model = MiniMind(get_config("tiny")).eval()
    linears = [n for n, m in model.model.named_modules() if isinstance(m, nn.Linear)]
    quantize_int8(model)
    assert sorted(quantized_modules(model)) == sorted(f"model.{n}" for n in linears)
    assert len(linears) == 7 * model.config.num_hidden_layers
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.model.embed_tokens.weight
    assert not any(isinstance(m, nn.Linear) for m in model.model.layers.modules())


def test_moe_router_stays_float_experts_are_quantised():
    model = MiniMind(get_config("tiny-moe")).eval()
    quantize_int8(model)
    names = quantized_modules(model)
    assert not any(n.endswith("mlp.gate") for n in names)
    assert any(".experts.0.gate_proj" in n for n in names)
    assert isinstance(model.model.layers[0].mlp.gate, nn.Linear)
    model(torch.randint(3, 256, (2, 6)))  # runs


def test_include_head_gives_the_head_its_own_int8_copy():
    model = MiniMind(get_config("tiny")).eval()
    embedding = model.model.embed_tokens.weight.clone()
    quantize_int8(model, include_head=True)
    assert isinstance(model.lm_head, Int8Linear)
    assert torch.equal(model.model.embed_tokens.weight, embedding)


def test_quantised_model_agrees_with_fp32_on_greedy_tokens():
    # std 0.1 weights: greedy output varies token to token (at N(0, 0.02) a random model with a
    # tied head mostly repeats its input, and any two models would agree)
    model = tiny_model(256, std=0.1)
    quantized = quantize_int8(copy.deepcopy(model))
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (4, 9, 13, 6)]
    ids = torch.tensor([prompts[1]])
    with torch.no_grad():
        a, b = model(ids).logits, quantized(ids).logits
    assert (a - b).abs().max() < 0.02 * a.abs().max()  # logits within 2% of their range
    assert greedy_agreement(model, model, prompts, 16) == 1.0
    agreement = greedy_agreement(model, quantized, prompts, 16)
    assert agreement >= 0.9, agreement
    # the measure can fail: a different model agrees far less
    assert greedy_agreement(model, tiny_model(256, seed=5, std=0.1), prompts, 16) < 0.5


def test_load_chat_model_quantize_flag(tmp_path):
    import argparse

    from minimind.inference import add_model_flags, load_chat_model

    save_tiny_checkpoint(tmp_path / "m")
    parser = add_model_flags(argparse.ArgumentParser(), speed=True)
    args = parser.parse_args(["--model", str(tmp_path / "m"), "--quantize", "int8", "--device", "cpu"])
    assert args.quantize == "int8"
    model, _ = load_chat_model(args.model, device="cpu", dtype="float32", quantize=args.quantize)
    assert quantized_modules(model)
    plain, _ = load_chat_model(args.model, device="cpu", dtype="float32")
    assert not quantized_modules(plain)
    with pytest.raises(ValueError, match="quantize"):
        load_chat_model(args.model, device="cpu", quantize="int4")


def test_quantize_warns_where_the_int8_kernel_was_measured_slow(monkeypatch):
    import warnings

    from minimind import quantize

    monkeypatch.setattr(quantize, "int8_kernel_slow_here", lambda: True)
    with pytest.warns(RuntimeWarning, match="AVX-512"):
        quantize_int8(MiniMind(get_config("tiny")))
    monkeypatch.setattr(quantize, "int8_kernel_slow_here", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_int8(MiniMind(get_config("tiny")))
