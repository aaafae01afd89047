"""Weight-only int8 for generation: every `nn.Linear` of the decoder keeps its weight as int8 with
one fp32 scale per output channel, and multiplies through torch's int8 weight-pack kernel.

    model = quantize_int8(model)                    # in place; returns the model
    greedy_agreement(fp32_model, model, prompts, 32)  # share of greedy tokens that stay the same

Quantisation is symmetric per output channel: scale_o = max_i |W_oi| / 127, W8_oi =
round(W_oi / scale_o) in [-127, 127], so each weight is off by at most scale_o / 2. Activations stay
in the model's dtype; `torch.ops.aten._weight_int8pack_mm(x, W8, scale)` computes x · (W8 · scale)ᵀ
without materialising the dequantised matrix (on a device without the kernel the module
dequantises and multiplies instead; `Int8Linear.kernel` says which ran last). A decoding step
reads every weight once, so 1 byte per weight instead of 4 is the hoped-for speed-up, but it only
comes with a fast kernel: on an AVX2-only x86 CPU torch's kernel was measured 3-30x slower than
the fp32 matmul (benchmarks/README.md), and `quantize_int8` warns there. The KV cache and the
(tied) embedding / LM head stay in the model's dtype unless `include_head=True` (then the head
gets its own int8 copy and the embedding stays as it was).

This is for inference only: Int8Linear has no gradient and `torch.ao.quantization.quantize_dynamic`
(deprecated) is not used.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

QUANTIZE_CHOICES = ("none", "int8")


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight (out, in), fp32 scales (out,)) of a float matrix, symmetric per output row."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def _int8pack_available() -> bool:
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


class Int8Linear(nn.Module):
    """A bias-free or biased Linear whose weight is int8 with per-output-channel fp32 scales."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self.kernel = None  # "int8pack" or "dequantize", whichever ran last

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, device=linear.weight.device)
        q, scales = quantize_per_channel(linear.weight)
        module.weight_int8.copy_(q)
        module.scales.copy_(scales)
        if linear.bias is not None:
            module.bias = linear.bias.detach().clone()
        return module

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        return (self.weight_int8.to(torch.float32) * self.scales.float()[:, None]).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        out = None
        if _int8pack_available():
            try:
                out = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.weight_int8,
                                                         self.scales.to(x.dtype))
                self.kernel = "int8pack"
            except (RuntimeError, NotImplementedError):  # no kernel for this device / dtype
                out = None
        if out is None:
            out = flat @ self.dequantized_weight(x.dtype).t()
            self.kernel = "dequantize"
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


def quantize_int8(model: nn.Module, include_head: bool = False, include_router: bool = False) -> nn.Module:
    """Replace every nn.Linear of the decoder (attention and MLP projections, experts) by an
    `Int8Linear`, in place, and return the model. The MoE router (`mlp.gate`, a few columns that
    decide the routing) stays as it is unless `include_router`; the LM head (tied to the
    embedding) too unless `include_head`."""
    decoder = getattr(model, "model", model)
    targets = []
    for name, module in decoder.named_modules():
        for child_name, child in module.named_children():
            if type(child) is not nn.Linear:  # LoRA layers are merged or removed first
                continue
            if child_name == "gate" and hasattr(module, "experts") and not include_router:
                continue
            targets.append((module, child_name, child))
    for parent, child_name, child in targets:
        setattr(parent, child_name, Int8Linear.from_linear(child))
    if include_head and isinstance(getattr(model, "lm_head", None), nn.Linear):
        model.lm_head = Int8Linear.from_linear(model.lm_head)
    weight = next(model.parameters(), None)
    if targets and weight is not None and weight.device.type == "cpu" and int8_kernel_slow_here():
        warnings.warn(f"this x86 CPU lacks AVX-512 (torch uses {torch.backends.cpu.get_cpu_capability()}): torch's "
                      "int8 weight kernel was measured 3-30x slower than an fp32 matmul on such a CPU "
                      "(benchmarks/README.md); int8 saves memory here but decodes slower than fp32",
                      RuntimeWarning, stacklevel=2)
    return model


def int8_kernel_slow_here() -> bool:
    """True on an x86 CPU without AVX-512, where `_weight_int8pack_mm` was measured slower than
    an fp32 matmul (AVX2, benchmarks/README.md). Other CPUs have not been measured."""
    import platform

    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    return x86 and "AVX512" not in torch.backends.cpu.get_cpu_capability()


def quantized_modules(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, Int8Linear)]


def greedy_agreement(model_a, model_b, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> float:
    """The share of greedy tokens that are equal when both models continue each prompt for
    `max_new_tokens` (no stop token): position by position, over all prompts. Once two
    continuations differ they usually keep differing, so this is a strict measure."""
    from minimind.generate import SamplingParams, generate_batch

    params = SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=())
    rows_a = generate_batch(model_a, prompts, params)
    rows_b = generate_batch(model_b, prompts, params)
    same = sum(int(x == y) for a, b in zip(rows_a, rows_b) for x, y in zip(a, b))
    return same / (len(prompts) * max_new_tokens)
