"""Export a MiniMind to a Hugging Face transformers folder that loads without custom code.

MiniMind2's layout *is* Llama's (same module names, rotate-half RoPE, SwiGLU, RMSNorm,
pre-norm) and minimind-3's is Qwen3's (plus per-head q/k RMSNorm), so a dense export is a
re-wrap of the same state_dict under `LlamaForCausalLM` / `Qwen3ForCausalLM`.

MiniMind2-MoE (softmax router, top-k weights renormalised, always-on shared experts) maps
exactly onto `GraniteMoeSharedForCausalLM` with its multipliers set to 1: Granite's softmax
over the top-k router logits equals the renormalised top-k probabilities, its shared MLP is
a SwiGLU (several shared experts concatenate into one wider SwiGLU), and its experts are
stacked [gate; up] matrices. tests/test_export_transformers.py proves every path: logits
agree to < 1e-4 in fp32, with and without cache.
"""
import math
import os
import tempfile
from pathlib import Path

import torch

from minimind.config import MiniMindConfig
from minimind.model import MiniMind


def _rope_parameters(config: MiniMindConfig) -> dict:
    scaling = config.rope_scaling
    # our YaRN only takes effect when the table reaches beyond the original context
    if scaling is None or config.max_position_embeddings <= scaling["original_max_position_embeddings"]:
        return {"rope_type": "default", "rope_theta": config.rope_theta}
    return {
        "rope_type": "yarn",
        "rope_theta": config.rope_theta,
        "factor": float(scaling["factor"]),
        "original_max_position_embeddings": scaling["original_max_position_embeddings"],
        "beta_fast": float(scaling.get("beta_fast", 32)),
        "beta_slow": float(scaling.get("beta_slow", 1)),
        "attention_factor": float(scaling.get("attention_factor", 1.0)),
    }


def _check_exportable(config: MiniMindConfig) -> None:
    if not config.use_moe:
        return
    if config.qk_norm:
        raise ValueError("no transformers architecture has q/k-norm attention with MiniMind's shared-expert MoE")
    if config.num_experts_per_tok == 1 or not config.norm_topk_prob:
        raise ValueError(
            "only a MoE whose top-k (k > 1) router weights are renormalised (norm_topk_prob=True) "
            "matches a transformers architecture (GraniteMoeShared); this config uses "
            f"num_experts_per_tok={config.num_experts_per_tok}, norm_topk_prob={config.norm_topk_prob}"
        )


def transformers_config(config: MiniMindConfig):
    """The transformers config describing the same network: `LlamaConfig`, `Qwen3Config` (q/k-norm),
    or `GraniteMoeSharedConfig` (mixture of experts)."""
    _check_exportable(config)
    import transformers

    common = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        hidden_act="silu",
        max_position_embeddings=config.max_position_embeddings,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters=_rope_parameters(config),
        tie_word_embeddings=config.tie_word_embeddings,
        attention_dropout=config.dropout,
        attention_bias=False,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    if config.use_moe:
        hf_config = transformers.GraniteMoeSharedConfig(
            **common,
            num_local_experts=config.n_routed_experts,
            num_experts_per_tok=config.num_experts_per_tok,
            shared_intermediate_size=config.n_shared_experts * config.intermediate_size,
            router_aux_loss_coef=config.aux_loss_alpha,
            attention_multiplier=1 / math.sqrt(config.head_dim),  # Granite's name for the softmax scale
            embedding_multiplier=1.0,
            residual_multiplier=1.0,
            logits_scaling=1.0,
        )
        hf_config.head_dim = config.head_dim
        return hf_config
    if config.qk_norm:
        return transformers.Qwen3Config(**common, head_dim=config.head_dim, use_sliding_window=False)
    return transformers.LlamaConfig(**common, head_dim=config.head_dim, mlp_bias=False)


def to_granite_state_dict(state: dict, config: MiniMindConfig) -> dict:
    """MiniMind MoE keys → GraniteMoeShared keys (experts stacked, [gate; up] fused)."""
    converted = {}
    for name, tensor in state.items():
        if ".mlp." not in name:
            converted[name] = tensor
    for i in range(config.num_hidden_layers):
        mlp, out = f"model.layers.{i}.mlp.", f"model.layers.{i}."
        converted[out + "block_sparse_moe.router.weight"] = state[mlp + "gate.weight"]
        converted[out + "block_sparse_moe.experts.gate_up_proj"] = torch.stack([
            torch.cat([state[f"{mlp}experts.{e}.gate_proj.weight"], state[f"{mlp}experts.{e}.up_proj.weight"]])
            for e in range(config.n_routed_experts)
        ])
        converted[out + "block_sparse_moe.experts.down_proj"] = torch.stack(
            [state[f"{mlp}experts.{e}.down_proj.weight"] for e in range(config.n_routed_experts)]
        )
        shared = range(config.n_shared_experts)
        converted[out + "shared_mlp.input_linear.weight"] = torch.cat(
            [state[f"{mlp}shared_experts.{s}.gate_proj.weight"] for s in shared]
            + [state[f"{mlp}shared_experts.{s}.up_proj.weight"] for s in shared]
        )
        converted[out + "shared_mlp.output_linear.weight"] = torch.cat(
            [state[f"{mlp}shared_experts.{s}.down_proj.weight"] for s in shared], dim=1
        )
    return converted


def _first_present(state: dict, *names):
    for name in names:
        if name in state:
            return state[name]
    raise KeyError(f"none of {list(names)} in the GraniteMoeShared weights")


def from_granite_state_dict(state: dict, config: MiniMindConfig) -> dict:
    """GraniteMoeShared keys → MiniMind MoE keys (the inverse of `to_granite_state_dict`)."""
    inner = config.intermediate_size
    converted = {}
    for name, tensor in state.items():
        if ".block_sparse_moe." not in name and ".shared_mlp." not in name:
            converted[name] = tensor
    for i in range(config.num_hidden_layers):
        src, mlp = f"model.layers.{i}.", f"model.layers.{i}.mlp."
        # in memory transformers names them router.weight / experts.{gate_up,down}_proj; on disk it
        # writes Granite's original checkpoint names (router.layer.weight, {input,output}_linear.weight)
        moe = src + "block_sparse_moe."
        converted[mlp + "gate.weight"] = _first_present(state, moe + "router.weight", moe + "router.layer.weight")
        gate_up = _first_present(state, moe + "experts.gate_up_proj", moe + "input_linear.weight")
        down = _first_present(state, moe + "experts.down_proj", moe + "output_linear.weight")
        for e in range(config.n_routed_experts):
            converted[f"{mlp}experts.{e}.gate_proj.weight"] = gate_up[e, :inner]
            converted[f"{mlp}experts.{e}.up_proj.weight"] = gate_up[e, inner:]
            converted[f"{mlp}experts.{e}.down_proj.weight"] = down[e]
        gates, ups = state[src + "shared_mlp.input_linear.weight"].chunk(2)
        downs = state[src + "shared_mlp.output_linear.weight"]
        for s in range(config.n_shared_experts):
            part = slice(s * inner, (s + 1) * inner)
            converted[f"{mlp}shared_experts.{s}.gate_proj.weight"] = gates[part]
            converted[f"{mlp}shared_experts.{s}.up_proj.weight"] = ups[part]
            converted[f"{mlp}shared_experts.{s}.down_proj.weight"] = downs[:, part]
    return {k: v.contiguous() for k, v in converted.items()}


def to_transformers_model(model: MiniMind):
    """A `LlamaForCausalLM` / `Qwen3ForCausalLM` / `GraniteMoeSharedForCausalLM` holding a copy of
    `model`'s weights (same dtype), in eval mode."""
    import transformers

    config = model.config
    hf_config = transformers_config(config)
    if config.use_moe:
        architecture = transformers.GraniteMoeSharedForCausalLM
    else:
        architecture = transformers.Qwen3ForCausalLM if config.qk_norm else transformers.LlamaForCausalLM
    dtype = next(model.parameters()).dtype
    hf_model = architecture(hf_config).to(dtype)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if config.use_moe:
        state = to_granite_state_dict(state, config)
    hf_model.load_state_dict(state, strict=True)  # every key matched: names are identical
    if model.config.tie_word_embeddings:
        hf_model.tie_weights()
    return hf_model.eval()


def export_transformers(model: MiniMind, out_dir, tokenizer=None) -> Path:
    """Write a transformers folder (config.json, model.safetensors, generation_config.json, and the
    tokenizer files if `tokenizer` is given) that `AutoModelForCausalLM.from_pretrained` loads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model = to_transformers_model(model)
    # write everything beside the target, then move each finished file into place (atomic per file)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as staging:
        hf_model.save_pretrained(staging, safe_serialization=True)
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), out_dir / name)
    if tokenizer is not None:
        tokenizer.save(out_dir)
    return out_dir
