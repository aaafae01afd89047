"""Saving and loading weights: safetensors + config.json written atomically, and imports of
upstream MiniMind2 `.pth` files and transformers-format folders, always with strict key checks."""
import json
import pickle
from pathlib import Path
from typing import Optional

import torch

from minimind.config import CONFIG_FILE, MiniMindConfig, field_lines
from minimind.files import atomic_write
from minimind.model import MiniMind

WEIGHTS_FILE = "model.safetensors"
# prefixes added by DistributedDataParallel and torch.compile; they are not part of the layout
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def save_model(model: MiniMind, out_dir, dtype: Optional[torch.dtype] = None) -> Path:
    """Write `model.safetensors` and `config.json` into `out_dir`; return the folder.

    A tied `lm_head.weight` is stored once (as `model.embed_tokens.weight`); `dtype` casts
    floating tensors (default: keep the model's dtype).
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        tensor = tensor.detach().cpu()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous().clone()
    atomic_write(out_dir / WEIGHTS_FILE, lambda temp: save_file(state, temp, metadata={"format": "pt"}))
    model.config.save(out_dir)
    return out_dir


def read_state_dict(path) -> dict:
    """Tensors from a `.safetensors` file, or from a torch pickle (`.pth`/`.pt`/`.bin`) read with
    `weights_only=True`, so a file that tries to run code while unpickling is refused."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise ValueError(f"{path}: not a PyTorch checkpoint ({_first_line(err)})") from None
        raise ValueError(
            f"{path}: refused to load: the file holds objects other than tensors, which could run "
            f"code when unpickled (torch.load weights_only=True said: {_first_line(err)})"
        ) from None
    except Exception as err:  # torch.load fails in many ways on a file that is no checkpoint (a text file: IndexError)
        raise ValueError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: {_first_line(err)})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # an upstream resume file: {'model', 'optimizer', 'epoch', …}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state_dict), got {type(state).__name__}")
    return state


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def check_parameter_count(config: MiniMindConfig, state: dict, config_source, weights_source) -> None:
    """Refuse a config that does not describe `state` before a model is built from it: a
    config.json is untrusted, and one with a huge layer count would allocate without bound."""
    held = sum(tensor.numel() for tensor in state.values())
    if config.tie_word_embeddings and "lm_head.weight" in state and "model.embed_tokens.weight" in state:
        held -= state["lm_head.weight"].numel()  # a tied matrix stored twice
    described = config.num_parameters()
    if described != held:
        raise ValueError(f"{config_source} describes {described:,} parameters but the weights ({weights_source}) "
                         f"hold {held:,}: the config does not belong to these weights")


def _strip_wrapper_prefixes(state: dict) -> dict:
    cleaned = {}
    for name, tensor in state.items():
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        cleaned[name] = tensor
    return cleaned


def config_from_state_dict(state: dict, num_attention_heads: int = 8) -> MiniMindConfig:
    """Infer the config of an upstream checkpoint from its tensor shapes (a `.pth` carries none).

    The number of attention heads cannot be read from the shapes unless q/k-norm weights are
    present (they are head_dim long); upstream MiniMind2 always uses 8.
    """
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
    return MiniMindConfig(
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


def load_state_dict_strict(model: MiniMind, state: dict, source: str) -> MiniMind:
    """Load `state` into `model`, failing with the lists of missing and unexpected keys, or of
    mismatched shapes, instead of silently skipping them (upstream's strict=False, §8.5)."""
    state = _strip_wrapper_prefixes(state)
    expected = model.state_dict()
    tied = model.config.tie_word_embeddings
    if tied and "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state = {**state, "lm_head.weight": state["model.embed_tokens.weight"]}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: the weights do not match the model's layout.\n"
            f"  missing keys ({len(missing)}): {missing[:20]}{' …' if len(missing) > 20 else ''}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}{' …' if len(unexpected) > 20 else ''}"
        )
    wrong_shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong_shapes:
        raise ValueError(f"{source}: shapes differ from the config:\n  " + "\n  ".join(wrong_shapes))
    if tied and not torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"]):
        raise ValueError(f"{source}: lm_head.weight differs from model.embed_tokens.weight but the config ties them")
    model.load_state_dict(state, strict=True)
    return model


def load_upstream_pth(path, config: Optional[MiniMindConfig] = None, device="cpu") -> MiniMind:
    """An upstream MiniMind `.pth` (fp16 state_dict) as a fp32 `MiniMind`; the config is inferred
    from the shapes when not given."""
    state = read_state_dict(path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in _strip_wrapper_prefixes(state).items()}
    config = config or config_from_state_dict(state)
    return load_state_dict_strict(MiniMind(config), state, str(path)).to(device)


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
_UPSTREAM_MOE_FIELDS = ("use_moe", "n_routed_experts", "num_experts_per_tok", "n_shared_experts",
                        "aux_loss_alpha", "seq_aux", "norm_topk_prob")


def config_from_transformers(values: dict, source: str, state: Optional[dict] = None) -> MiniMindConfig:
    """Our config from a transformers `config.json`: Llama, Qwen3 (q/k-norm), GraniteMoeShared
    (our MoE export), or upstream's own "minimind" (structure read from the weights in `state`)."""
    model_type = values.get("model_type")
    if model_type not in ("llama", "qwen3", "granitemoeshared", "minimind"):
        raise ValueError(
            f"{source}: model_type {model_type!r} is not a MiniMind layout (llama, qwen3, granitemoeshared, minimind)"
        )
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
    fields["qk_norm"] = model_type == "qwen3"
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
            norm_topk_prob=True,
        )
    if model_type == "minimind":
        if state is None:
            raise ValueError(f"{source}: an upstream minimind config needs the weights to infer its layout")
        inferred = config_from_state_dict(state, values.get("num_attention_heads", 8)).to_dict()
        structural = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                      "head_dim", "intermediate_size", "qk_norm", "use_moe", "n_routed_experts", "n_shared_experts")
        fields.update({k: inferred[k] for k in structural})
        fields.update({k: values[k] for k in ("num_experts_per_tok", "aux_loss_alpha", "seq_aux", "norm_topk_prob")
                       if k in values})
        fields.setdefault("tie_word_embeddings", True)
    return MiniMindConfig.from_dict(fields, source=source)


def _read_transformers_weights(directory: Path) -> tuple[dict, Path]:
    """(the state dict of a checkpoint folder, the file it came from: weights or shard index)."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as err:
            raise ValueError(f"{index}: not a safetensors shard index ({type(err).__name__}: {err})") from None
        state = {}
        for shard in shards:
            state.update(read_state_dict(directory / shard))
        return state, index
    for name in (WEIGHTS_FILE, "pytorch_model.bin"):
        if (directory / name).exists():
            return read_state_dict(directory / name), directory / name
    raise FileNotFoundError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_model(path, config: Optional[MiniMindConfig] = None, device="cpu") -> MiniMind:
    """Load a `MiniMind` in eval mode from any of:

    - a folder written by `save_model` (model.safetensors + our config.json);
    - a transformers folder (LlamaForCausalLM, Qwen3ForCausalLM, GraniteMoeSharedForCausalLM as
      written by `minimind.export.transformers`, or upstream's own MiniMind export);
    - an upstream MiniMind2 `.pth` file (config inferred from shapes unless given);
    - a bare `.safetensors` file (config required, or inferred from shapes).
    Keys are checked strictly: any missing or unexpected key is an error that lists them.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.is_file():
        if path.suffix == ".safetensors":
            state = read_state_dict(path)
            model = MiniMind(config or config_from_state_dict(state))
            model = load_state_dict_strict(model, state, str(path))
        else:
            model = load_upstream_pth(path, config)
        return model.to(device).eval()

    config_path = path / CONFIG_FILE
    if not config_path.exists() and config is None:
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (pass config= to load bare weights)")
    state, weights_path = _read_transformers_weights(path)
    if config is None:
        text = config_path.read_text(encoding="utf-8")
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}:{err.lineno}: invalid JSON ({err.msg})") from None
        if isinstance(values, dict) and ("model_type" in values or "architectures" in values):
            try:
                config = config_from_transformers(values, str(config_path), state)
            except (KeyError, TypeError) as err:  # a field the layout needs is missing or of the wrong type
                raise ValueError(f"{config_path}: not a usable transformers config ({type(err).__name__}: {err})") from None
            if values.get("model_type") == "granitemoeshared":
                from minimind.export.transformers import from_granite_state_dict

                state = from_granite_state_dict(state, config)
        else:
            config = MiniMindConfig.from_dict(values, source=str(config_path), lines=field_lines(text))
        check_parameter_count(config, state, config_path, weights_path)
    state = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()}
    model = load_state_dict_strict(MiniMind(config), state, str(path))
    return model.to(device).eval()
