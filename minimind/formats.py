"""Every foreign layout of a MiniMind, both directions, in one place: what upstream MiniMind2 `.pth`
files, upstream's transformers export ("minimind"), Llama, Qwen3 and GraniteMoeShared call each
weight and each setting, and how ours maps onto theirs (Qwen3-MoE too). Adding a layout means
editing this file.

Reading (`minimind.checkpoint.load_model` calls it):
- `config_from_state_dict`: a `.pth` carries no config; infer ours from the tensor shapes;
- `from_transformers(values, source, state)`: a transformers `config.json` (and its weights) →
  our config and state dict (Llama, Qwen3, GraniteMoeShared, upstream's "minimind").
Writing (`minimind.export.transformers` calls it):
- `transformers_config(config)`, `to_transformers_model(model)`: a `LlamaForCausalLM` (dense),
  `Qwen3ForCausalLM` (q/k-norm), `Qwen3MoeForCausalLM` (minimind-3's MoE: q/k-norm, routed experts
  only) or `GraniteMoeSharedForCausalLM` (MiniMind2's MoE with shared experts) holding the same
  network.

MiniMind2's layout *is* Llama's (same module names, rotate-half RoPE, SwiGLU, RMSNorm, pre-norm)
and minimind-3's is Qwen3's (plus per-head q/k RMSNorm), so a dense model is a re-wrap of the
same state_dict. MiniMind2-MoE (softmax router, top-k weights renormalised, always-on shared
experts) maps exactly onto GraniteMoeShared with its multipliers set to 1: Granite's softmax over
the top-k router logits equals the renormalised top-k probabilities, its shared MLP is a SwiGLU
(several shared experts concatenate into one wider SwiGLU), and its experts are stacked
[gate; up] matrices. minimind-3's MoE (q/k-norm, routed experts only, softmax router whose top-k
weights are renormalised, even the single one at k = 1) is Qwen3-MoE's exactly; a `.pth` of either
does not record its routing, so `config_from_state_dict` refuses to guess it.
tests/test_export_transformers.py proves every path: logits agree to < 1e-4
in fp32, with and without cache. transformers is imported only by the functions that need it.
"""
import math
from typing import Optional

import torch

from minimind.config import MiniMindConfig


# ---------------------------------------------------------------------------------------------
# Upstream MiniMind2 `.pth` files: a bare state dict in our key names


class RoutingNotInLayout(ValueError):
    """A mixture-of-experts state dict without a config: its shapes say how many experts there
    are, not how tokens are routed to them."""


# the MoE settings no tensor shape records
ROUTING_FIELDS = ("num_experts_per_tok", "norm_topk_prob", "norm_top1_prob", "aux_loss_alpha", "seq_aux")


def config_from_state_dict(state: dict, num_attention_heads: int = 8) -> MiniMindConfig:
    """Infer the config of an upstream checkpoint from its tensor shapes (a `.pth` carries none).

    The number of attention heads cannot be read from the shapes unless q/k-norm weights are
    present (they are head_dim long); upstream MiniMind2 always uses 8. A mixture of experts is
    refused (`RoutingNotInLayout`, naming the preset to pass): how many experts each token uses
    and whether their weights are renormalised change the logits but leave no trace in the
    shapes, and MiniMind2 and minimind-3 differ in both.
    """
    fields = layout_from_state_dict(state, num_attention_heads)
    if fields["use_moe"]:
        raise RoutingNotInLayout(_routing_advice(fields))
    return MiniMindConfig(**fields)


def _routing_advice(fields: dict) -> str:
    """What to pass for a MoE state dict: the preset of its family, with the sizes that differ."""
    from minimind.config import get_config

    family = "minimind3-moe" if fields["qk_norm"] and not fields["n_shared_experts"] else \
        "minimind2-moe" if not fields["qk_norm"] and fields["n_shared_experts"] else None
    layout = (f"{fields['n_routed_experts']} routed and {fields['n_shared_experts']} shared experts, "
              f"{'with' if fields['qk_norm'] else 'without'} q/k-norm")
    message = (f"a mixture-of-experts checkpoint ({layout}) does not record how tokens are routed "
               f"({', '.join(ROUTING_FIELDS[:3])}); pass its config")
    if family is None:
        return message + " (config=MiniMindConfig(...) with those fields)"
    preset = get_config(family).to_dict()
    differing = {k: v for k, v in fields.items() if preset.get(k) != v and k not in ROUTING_FIELDS}
    routing = ", ".join(f"{k}={preset[k]}" for k in ROUTING_FIELDS[:3])
    if not differing:
        return f"{message}: --preset {family} ({routing}), or config=get_config({family!r})"
    overrides = ", ".join(f"{k}={v!r}" for k, v in differing.items())
    return f"{message}: config=get_config({family!r}, {overrides}) ({routing})"


def layout_from_state_dict(state: dict, num_attention_heads: int = 8) -> dict:
    """The config fields a state dict's shapes determine (the routing of a MoE aside)."""
    embed = state["model.embed_tokens.weight"]
    vocab_size, hidden_size = embed.shape
    layers = {int(k.split(".")[2]) for k in state if k.startswith("model.layers.")}
    prefix = "model.layers.0."
    qk_norm = f"{prefix}self_attn.q_norm.weight" in state
    if qk_norm:
        head_dim = state[f"{prefix}self_attn.q_norm.weight"].shape[0]
        num_attention_heads = state[f"{prefix}self_attn.q_proj.weight"].shape[0] // head_dim
    else:
        head_dim = state[f"{prefix}self_attn.q_proj.weight"].shape[0] // num_attention_heads
    kv_heads = state[f"{prefix}self_attn.k_proj.weight"].shape[0] // head_dim
    use_moe = f"{prefix}mlp.gate.weight" in state
    moe = {}
    if use_moe:
        experts = {int(k.split(".")[5]) for k in state if k.startswith(f"{prefix}mlp.experts.")}
        shared = {int(k.split(".")[5]) for k in state if k.startswith(f"{prefix}mlp.shared_experts.")}
        moe = dict(n_routed_experts=len(experts), n_shared_experts=len(shared))
        intermediate = state[f"{prefix}mlp.experts.0.gate_proj.weight"].shape[0]
    else:
        intermediate = state[f"{prefix}mlp.gate_proj.weight"].shape[0]
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=len(layers),
        num_attention_heads=num_attention_heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        qk_norm=qk_norm,
        rms_norm_eps=1e-6 if qk_norm else 1e-5,  # minimind-3 vs MiniMind2 default
        use_moe=use_moe,
        **moe,
    )


# ---------------------------------------------------------------------------------------------
# transformers folders → ours


# fields a transformers LlamaConfig / Qwen3Config / upstream MiniMindConfig shares with ours
_HF_SHARED_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


MODEL_TYPES = ("llama", "qwen3", "qwen3_moe", "granitemoeshared", "minimind")


def config_from_transformers(values: dict, source: str, state: Optional[dict] = None) -> MiniMindConfig:
    """Our config from a transformers `config.json`: Llama, Qwen3 (q/k-norm), Qwen3-MoE
    (minimind-3's MoE), GraniteMoeShared (MiniMind2's MoE), or upstream's own "minimind" (structure
    read from the weights in `state`, routing from the config's fields, with the defaults of the
    generation the weights are from: minimind-3 has q/k-norm)."""
    model_type = values.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{source}: model_type {model_type!r} is not a MiniMind layout ({', '.join(MODEL_TYPES)})")
    for flag in ("attention_bias", "mlp_bias"):
        if values.get(flag):
            raise ValueError(f"{source}: {flag}=true is not part of the MiniMind layout")
    if values.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act {values['hidden_act']!r}, MiniMind uses silu")
    fields = {k: values[k] for k in _HF_SHARED_FIELDS if values.get(k) is not None}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(fields.get(name), list):  # transformers allows several stop ids; MiniMind has one
            fields[name] = fields[name][0]
    rope = values.get("rope_parameters") or {}
    fields["rope_theta"] = values.get("rope_theta", rope.get("rope_theta", 1e6))
    scaling = values.get("rope_scaling") or (rope if rope.get("rope_type") == "yarn" else None)
    if scaling is not None and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        fields["rope_scaling"] = {
            "type": "yarn",
            **{k: scaling[k] for k in ("factor", "original_max_position_embeddings", "beta_fast",
                                       "beta_slow", "attention_factor") if k in scaling},
        }
    fields["qk_norm"] = model_type in ("qwen3", "qwen3_moe")
    if model_type == "qwen3_moe":
        if values.get("mlp_only_layers") or values.get("decoder_sparse_step", 1) != 1:
            raise ValueError(f"{source}: dense layers between the sparse ones (mlp_only_layers, decoder_sparse_step) "
                             "are not part of the MiniMind layout")
        normalised = bool(values.get("norm_topk_prob", False))
        fields.update(
            use_moe=True,
            # transformers 5 writes num_local_experts; Qwen3-MoE's own configs say num_experts
            n_routed_experts=values["num_experts"] if "num_experts" in values else values["num_local_experts"],
            num_experts_per_tok=values["num_experts_per_tok"],
            n_shared_experts=0,
            intermediate_size=values["moe_intermediate_size"],
            norm_topk_prob=normalised,
            norm_top1_prob=normalised and values["num_experts_per_tok"] == 1,
            aux_loss_alpha=values.get("router_aux_loss_coef", 0.001),
            seq_aux=False,
        )
    if model_type == "granitemoeshared":
        head_dim = values.get("head_dim") or values["hidden_size"] // values["num_attention_heads"]
        multipliers = {k: values.get(k, 1.0) for k in ("embedding_multiplier", "residual_multiplier", "logits_scaling")}
        if any(abs(v - 1.0) > 1e-9 for v in multipliers.values()) or abs(
            values.get("attention_multiplier", 1.0) - head_dim**-0.5
        ) > 1e-9:
            raise ValueError(f"{source}: Granite multipliers other than MiniMind's (all 1, attention 1/sqrt(head_dim))")
        shared, remainder = divmod(values.get("shared_intermediate_size", 0), values["intermediate_size"])
        if remainder:
            raise ValueError(f"{source}: shared_intermediate_size is not a multiple of intermediate_size")
        fields.update(
            use_moe=True,
            n_routed_experts=values["num_local_experts"],
            num_experts_per_tok=values["num_experts_per_tok"],
            n_shared_experts=shared,
            aux_loss_alpha=values.get("router_aux_loss_coef", 0.01),
            norm_topk_prob=True,  # Granite's softmax over the top-k logits: renormalised, at k = 1 too
            norm_top1_prob=values["num_experts_per_tok"] == 1,
        )
    if model_type == "minimind":
        if state is None:
            raise ValueError(f"{source}: an upstream minimind config needs the weights to infer its layout")
        inferred = layout_from_state_dict(state, values.get("num_attention_heads", 8))
        structural = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                      "head_dim", "intermediate_size", "qk_norm", "use_moe", "n_routed_experts", "n_shared_experts")
        fields.update({k: inferred[k] for k in structural})
        if inferred["use_moe"] and inferred["qk_norm"]:  # minimind-3: its MiniMindConfig's names and defaults
            normalised, top_k = values.get("norm_topk_prob", True), values.get("num_experts_per_tok", 1)
            fields.update(num_experts_per_tok=top_k, norm_topk_prob=normalised, norm_top1_prob=normalised and top_k == 1,
                          aux_loss_alpha=values.get("router_aux_loss_coef", 5e-4), seq_aux=False)
        elif inferred["use_moe"]:  # MiniMind2: renormalises only when k > 1, as our norm_topk_prob
            fields.update({k: values[k] for k in ("num_experts_per_tok", "aux_loss_alpha", "seq_aux", "norm_topk_prob")
                           if k in values})
        fields.setdefault("tie_word_embeddings", True)
    return MiniMindConfig.from_dict(fields, source=source)


def from_transformers(values: dict, source: str, state: dict) -> tuple[MiniMindConfig, dict]:
    """Our config and state dict from a transformers `config.json` (`values`) and its weights
    (`state`, as read from the folder): the config as `config_from_transformers` maps it, the
    weights renamed into our layout where theirs differs (GraniteMoeShared's fused experts)."""
    config = config_from_transformers(values, source, state)
    if values.get("model_type") == "granitemoeshared":
        state = from_granite_state_dict(state, config)
    elif values.get("model_type") == "qwen3_moe":
        state = from_qwen3_moe_state_dict(state, config)
    return config, state


# ---------------------------------------------------------------------------------------------
# ours → transformers


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


def renormalises_top_k(config: MiniMindConfig) -> bool:
    """Whether the MoE's top-k router weights are renormalised to sum to 1 (`MoEFeedForward.route`)."""
    return config.norm_topk_prob and (config.num_experts_per_tok > 1 or config.norm_top1_prob)


def _is_qwen3_moe(config: MiniMindConfig) -> bool:
    """minimind-3's MoE family: q/k-norm attention, routed experts only (any k, either normalisation)."""
    return config.use_moe and config.qk_norm and config.n_shared_experts == 0


def _check_exportable(config: MiniMindConfig) -> None:
    if not config.use_moe or _is_qwen3_moe(config):
        return
    if config.qk_norm:
        raise ValueError("no transformers architecture has q/k-norm attention with MiniMind's shared-expert MoE "
                         "(Qwen3-MoE has no shared expert: n_shared_experts=0 exports as Qwen3MoeForCausalLM)")
    if not renormalises_top_k(config):
        raise ValueError(
            "only a MoE whose top-k router weights are renormalised (norm_topk_prob=True; at k = 1 also "
            "norm_top1_prob=True) matches a transformers architecture (GraniteMoeShared); this config uses "
            f"num_experts_per_tok={config.num_experts_per_tok}, norm_topk_prob={config.norm_topk_prob}, "
            f"norm_top1_prob={config.norm_top1_prob}"
        )


def transformers_config(config: MiniMindConfig):
    """The transformers config describing the same network: `LlamaConfig`, `Qwen3Config` (q/k-norm),
    `Qwen3MoeConfig` (q/k-norm, routed experts only: minimind-3's MoE) or `GraniteMoeSharedConfig`
    (MiniMind2's MoE with shared experts)."""
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
    if _is_qwen3_moe(config):
        return transformers.Qwen3MoeConfig(
            **common,
            head_dim=config.head_dim,
            num_experts=config.n_routed_experts,
            num_experts_per_tok=config.num_experts_per_tok,
            moe_intermediate_size=config.intermediate_size,
            norm_topk_prob=renormalises_top_k(config),
            decoder_sparse_step=1,  # every layer is a MoE layer, as ours
            mlp_only_layers=[],
            router_aux_loss_coef=config.aux_loss_alpha,
            use_sliding_window=False,
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


def to_qwen3_moe_state_dict(state: dict, config: MiniMindConfig) -> dict:
    """MiniMind MoE keys → Qwen3-MoE's in memory: the router keeps its name (`mlp.gate.weight`), the
    experts are stacked into `mlp.experts.gate_up_proj` (E, 2·inner, hidden; [gate; up]) and
    `mlp.experts.down_proj` (E, hidden, inner)."""
    converted = {name: tensor for name, tensor in state.items() if ".mlp.experts." not in name}
    for i in range(config.num_hidden_layers):
        experts = f"model.layers.{i}.mlp.experts."
        converted[experts + "gate_up_proj"] = torch.stack([
            torch.cat([state[f"{experts}{e}.gate_proj.weight"], state[f"{experts}{e}.up_proj.weight"]])
            for e in range(config.n_routed_experts)])
        converted[experts + "down_proj"] = torch.stack(
            [state[f"{experts}{e}.down_proj.weight"] for e in range(config.n_routed_experts)])
    return converted


def from_qwen3_moe_state_dict(state: dict, config: MiniMindConfig) -> dict:
    """Qwen3-MoE weights → MiniMind MoE keys. On disk transformers writes one matrix per expert
    (`mlp.experts.{e}.gate_proj.weight`, our names already); in memory they are stacked."""
    inner = config.intermediate_size
    converted = {name: tensor for name, tensor in state.items()
                 if not name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj"))}
    for i in range(config.num_hidden_layers):
        experts = f"model.layers.{i}.mlp.experts."
        if experts + "gate_up_proj" not in state:
            continue
        gate_up, down = state[experts + "gate_up_proj"], state[experts + "down_proj"]
        for e in range(config.n_routed_experts):
            converted[f"{experts}{e}.gate_proj.weight"] = gate_up[e, :inner]
            converted[f"{experts}{e}.up_proj.weight"] = gate_up[e, inner:]
            converted[f"{experts}{e}.down_proj.weight"] = down[e]
    return {k: v.contiguous() for k, v in converted.items()}


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


def to_transformers_model(model):
    """A `LlamaForCausalLM` / `Qwen3ForCausalLM` / `Qwen3MoeForCausalLM` / `GraniteMoeSharedForCausalLM`
    holding a copy of the MiniMind `model`'s weights (same dtype), in eval mode."""
    import transformers

    config = model.config
    hf_config = transformers_config(config)
    if _is_qwen3_moe(config):
        architecture = transformers.Qwen3MoeForCausalLM
    elif config.use_moe:
        architecture = transformers.GraniteMoeSharedForCausalLM
    else:
        architecture = transformers.Qwen3ForCausalLM if config.qk_norm else transformers.LlamaForCausalLM
    dtype = next(model.parameters()).dtype
    hf_model = architecture(hf_config).to(dtype)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if _is_qwen3_moe(config):
        state = to_qwen3_moe_state_dict(state, config)
    elif config.use_moe:
        state = to_granite_state_dict(state, config)
    hf_model.load_state_dict(state, strict=True)  # every key matched: names are identical
    if model.config.tie_word_embeddings:
        hf_model.tie_weights()
    return hf_model.eval()
