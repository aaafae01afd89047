"""Saving and loading weights: safetensors + config.json written atomically, and reading upstream
MiniMind2 `.pth` files and transformers-format folders (their layouts are `minimind.formats`'),
always with strict key checks."""
import json
import pickle
from pathlib import Path
from typing import Optional

import torch

from minimind.config import CONFIG_FILE, MiniMindConfig, field_lines
from minimind.files import atomic_write
from minimind.formats import RoutingNotInLayout, config_from_state_dict, from_transformers
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


def load_state_dict_strict(model: MiniMind, state: dict, source: str) -> MiniMind:
    """Load `state` into `model`, failing with the lists of missing and unexpected keys, or of
    mismatched shapes, instead of silently skipping them (upstream MiniMind loads with strict=False)."""
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
    config = config or _config_of_bare_weights(state, path)
    return load_state_dict_strict(MiniMind(config), state, str(path)).to(device)


def _config_of_bare_weights(state: dict, path) -> MiniMindConfig:
    """The config a file of bare weights (`.pth`, `.safetensors`) implies; a MoE is refused with
    the config to pass, since its routing is in no tensor's shape."""
    try:
        return config_from_state_dict(state)
    except RoutingNotInLayout as error:
        raise ValueError(f"{path}: {error}") from None


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
    - an upstream MiniMind `.pth` file (config inferred from shapes unless given; a mixture of
      experts needs its config, e.g. `get_config("minimind3-moe")`: its routing is in no shape);
    - a bare `.safetensors` file (config required, or inferred from shapes).
    Keys are checked strictly: any missing or unexpected key is an error that lists them.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.is_file():
        if path.suffix == ".safetensors":
            state = read_state_dict(path)
            model = MiniMind(config or _config_of_bare_weights(state, path))
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
                config, state = from_transformers(values, str(config_path), state)
            except (KeyError, TypeError) as err:  # a field the layout needs is missing or of the wrong type
                raise ValueError(f"{config_path}: not a usable transformers config ({type(err).__name__}: {err})") from None
        else:
            config = MiniMindConfig.from_dict(values, source=str(config_path), lines=field_lines(text))
        check_parameter_count(config, state, config_path, weights_path)
    state = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()}
    model = load_state_dict_strict(MiniMind(config), state, str(path))
    return model.to(device).eval()
