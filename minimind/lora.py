"""Low-rank adapters (LoRA, Hu et al. 2021): fine-tune a frozen model through small B·A updates.

A `LoRALinear` is an `nn.Linear` (same `weight`, same state-dict key) that also holds any
number of named adapters; the output is W·x + (alpha / rank)·B·A·dropout(x) for the active one.
`apply_lora` swaps the chosen projections of a model for `LoRALinear`s and freezes everything
but the new adapter; `save_lora`/`load_lora` move one adapter (weights alone, safetensors, plus
a small JSON) and refuse to load it onto a different base model; `merge_lora` folds B·A into W
for inference at the base model's speed, `unmerge_lora` takes it out again.

An adapter may also train a few rows of the token embedding (`trainable_tokens`, PEFT's
"trainable tokens"): words the base model never saw have embeddings that are still near their
random initialisation, and a low-rank update of the projections cannot give them an identity of
their own. `TokenRowsEmbedding` adds a trained delta to those rows only; with tied weights the
output head (`TiedTokenRowsHead`) reads the same adapted rows, so the new words can be written too.
"""
import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT_VERSION = 1


class AdaptedLayer:
    """What every adapted layer does alike: named adapters, at most one active, merged exactly.

    A subclass is an nn.Module with a `weight`; it says which adapters it holds (`has_adapter`),
    what `weight` becomes with one folded in (`merged_weight`) and which tensors an adapter saves
    (`adapter_state`)."""

    def _init_adapters(self) -> None:
        self.active_adapter: str | None = None
        self.merged_adapter: str | None = None  # the adapter currently folded into `weight`
        self._weight_before_merge: torch.Tensor | None = None  # so that unmerging restores W exactly

    def adapter_names(self) -> list[str]:
        raise NotImplementedError

    def has_adapter(self, name: str) -> bool:
        return name in self.adapter_names()

    def merged_weight(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        """{attribute: tensor}: the ParameterDict attributes holding adapter `name`'s weights."""
        raise NotImplementedError

    def merge(self) -> None:
        """Fold the active adapter into `weight`. A copy of the unmerged weight is kept (outside the
        state dict) so that `unmerge` gives back W bit for bit: W + ΔW − ΔW is not W in floating point."""
        if self.active_adapter is None or self.merged_adapter is not None:
            return
        with torch.no_grad():
            self._weight_before_merge = self.weight.detach().clone()
            self.weight.copy_(self.merged_weight(self.active_adapter))
        self.merged_adapter = self.active_adapter

    def unmerge(self) -> None:
        if self.merged_adapter is None:
            return
        with torch.no_grad():
            self.weight.copy_(self._weight_before_merge)
        self._weight_before_merge = None
        self.merged_adapter = None

    def set_active(self, name: str | None) -> None:
        if name is not None and not self.has_adapter(name):
            raise KeyError(f"no adapter named {name!r}; this layer has {sorted(self.adapter_names())}")
        if name != self.merged_adapter:
            self.unmerge()
        self.active_adapter = name


class LoRALinear(AdaptedLayer, nn.Linear):
    """nn.Linear with named low-rank adapters; at most one is active (or merged) at a time."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.lora_A = nn.ParameterDict()  # name -> (rank, in_features)
        self.lora_B = nn.ParameterDict()  # name -> (out_features, rank)
        self.lora_dropout = nn.ModuleDict()
        self.lora_scaling: dict[str, float] = {}
        self._init_adapters()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "LoRALinear":
        """Wrap an existing layer, sharing (not copying) its weight and bias."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.weight = linear.weight
        layer.bias = linear.bias
        return layer.train(linear.training)

    def add_adapter(self, name: str, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if name in self.lora_A:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must lie in [0, 1), got {dropout}")
        factory = {"device": self.weight.device, "dtype": self.weight.dtype}
        lora_A = torch.empty(rank, self.in_features, **factory)
        # A starts random like any nn.Linear, B starts at zero: the adapted model starts as the base model.
        nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))
        self.lora_A[name] = nn.Parameter(lora_A)
        self.lora_B[name] = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_dropout[name].train(self.training)  # an adapter added to an eval-mode model must not drop out
        self.lora_scaling[name] = alpha / rank

    def delta_weight(self, name: str) -> torch.Tensor:
        """The update the adapter adds to W: (alpha / rank)·B·A, shape (out_features, in_features)."""
        return (self.lora_B[name] @ self.lora_A[name]) * self.lora_scaling[name]

    def adapter_names(self) -> list[str]:
        return list(self.lora_A)

    def merged_weight(self, name: str) -> torch.Tensor:
        return self.weight + self.delta_weight(name).to(self.weight.dtype)

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        return {"lora_A": self.lora_A[name], "lora_B": self.lora_B[name]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        name = self.active_adapter
        if name is None or self.merged_adapter is not None:
            return out
        # Two thin matmuls (x·Aᵀ then ·Bᵀ) instead of building the full (out, in) update.
        low_rank = F.linear(F.linear(self.lora_dropout[name](x), self.lora_A[name]), self.lora_B[name])
        return out + low_rank * self.lora_scaling[name]

    def extra_repr(self) -> str:
        adapters = ", ".join(f"{n}(r={self.lora_A[n].shape[0]})" for n in self.lora_A)
        return f"{super().extra_repr()}, adapters=[{adapters}], active={self.active_adapter}"


class TokenRowsEmbedding(AdaptedLayer, nn.Embedding):
    """nn.Embedding whose adapters train chosen rows: row t reads W[t] + delta[t] for t in the
    adapter's token ids, every other row reads W. Deltas start at zero (the adapted model starts as
    the base model) and weight decay pulls them back towards the base, as it does LoRA's B·A."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, device=device, dtype=dtype)
        self.lora_token_delta = nn.ParameterDict()  # name -> (len(ids), embedding_dim)
        self.lora_token_ids: dict[str, torch.Tensor] = {}  # name -> sorted distinct row indices (in the adapter's JSON)
        self._init_adapters()

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> "TokenRowsEmbedding":
        """Wrap an existing embedding, sharing (not copying) its weight."""
        layer = cls(embedding.num_embeddings, embedding.embedding_dim, padding_idx=embedding.padding_idx, device="meta")
        layer.weight = embedding.weight
        return layer.train(embedding.training)

    def add_adapter(self, name: str, token_ids) -> None:
        if name in self.lora_token_delta:
            raise ValueError(f"adapter {name!r} already exists on this layer")
        ids = sorted({int(t) for t in token_ids})
        if not ids:
            raise ValueError("trainable_tokens is empty: name at least one token id")
        if ids[0] < 0 or ids[-1] >= self.num_embeddings:
            raise ValueError(f"trainable token ids must lie in [0, {self.num_embeddings}), got {ids[0]}..{ids[-1]}")
        self.lora_token_ids[name] = torch.tensor(ids, dtype=torch.long, device=self.weight.device)
        self.lora_token_delta[name] = nn.Parameter(torch.zeros(len(ids), self.embedding_dim,
                                                               device=self.weight.device, dtype=self.weight.dtype))

    def adapter_names(self) -> list[str]:
        return list(self.lora_token_delta)

    def merged_weight(self, name: str) -> torch.Tensor:
        ids = self.lora_token_ids[name].to(self.weight.device)
        return self.weight.index_add(0, ids, self.lora_token_delta[name].to(self.weight.dtype))

    def adapter_state(self, name: str) -> dict[str, torch.Tensor]:
        return {"lora_token_delta": self.lora_token_delta[name]}

    def adapted_weight(self) -> torch.Tensor:
        """The weight this layer computes with now: W, W with the active adapter's rows, or the merged W."""
        if self.active_adapter is None or self.merged_adapter is not None:
            return self.weight
        return self.merged_weight(self.active_adapter)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.adapted_weight(), self.padding_idx, self.max_norm,
                           self.norm_type, self.scale_grad_by_freq, self.sparse)


class TiedTokenRowsHead(nn.Linear):
    """The output head of a model whose head and embedding share one weight: it computes with the
    embedding's adapted rows, so a trained row changes both how a token is read and how it is
    written. It holds no adapter of its own (merging the embedding's adapter changes the shared
    weight once)."""

    @classmethod
    def tied_to(cls, head: nn.Linear, embedding: TokenRowsEmbedding) -> "TiedTokenRowsHead":
        layer = cls(head.in_features, head.out_features, bias=head.bias is not None, device="meta")
        layer.weight, layer.bias = head.weight, head.bias
        layer._embedding = [embedding]  # a list: not a submodule, so the state dict holds the rows once
        return layer.train(head.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._embedding[0].adapted_weight(), self.bias)


def lora_layers(model: nn.Module) -> dict[str, AdaptedLayer]:
    """Every adapted layer of the model (LoRALinear, TokenRowsEmbedding), by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, AdaptedLayer)}


def _add_token_rows(model: nn.Module, name: str, token_ids) -> None:
    """Adapter `name` trains the embedding rows `token_ids` (and, through them, a tied head's)."""
    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    if len(embeddings) != 1:
        raise ValueError(f"trainable_tokens needs exactly one nn.Embedding in the model, found {len(embeddings)}")
    embedding_name, embedding = embeddings[0]
    if not isinstance(embedding, TokenRowsEmbedding):
        embedding = TokenRowsEmbedding.from_embedding(embedding)
        _replace_module(model, embedding_name, embedding)
    embedding.add_adapter(name, token_ids)
    for module_name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and module.weight is embedding.weight and not isinstance(module, TiedTokenRowsHead):
            _replace_module(model, module_name, TiedTokenRowsHead.tied_to(module, embedding))


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child_name, new)


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets=DEFAULT_TARGETS,
    name: str = "default",
    trainable_tokens=(),
) -> nn.Module:
    """Add adapter `name` to every nn.Linear whose attribute name is in `targets`; train only it.

    Layers become `LoRALinear` in place (their weights and state-dict keys are unchanged). Every
    parameter of the model is frozen except the new adapter's A and B, and `name` becomes the
    active adapter. Calling it again with another name adds a second adapter to the same layers.
    `trainable_tokens` (token ids) also gives the adapter a trained delta on those rows of the
    token embedding, which a tied output head shares. Returns the model.
    """
    targets = tuple(targets)
    if not targets:
        raise ValueError("targets is empty: name at least one projection, e.g. 'q_proj'")
    matched = []
    for module_name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name not in targets or not isinstance(child, nn.Linear):
                continue
            if not isinstance(child, LoRALinear):
                child = LoRALinear.from_linear(child)
                setattr(module, child_name, child)
            child.add_adapter(name, rank, alpha, dropout)
            matched.append((f"{module_name}.{child_name}" if module_name else child_name, child_name))
    missing = set(targets) - {child_name for _, child_name in matched}
    if missing:
        linear_names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear named {sorted(missing)} in the model; its linear layers are {linear_names}")
    if len(trainable_tokens):
        _add_token_rows(model, name, trainable_tokens)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in lora_layers(model).values():
        if layer.has_adapter(name):
            for parameter in layer.adapter_state(name).values():
                parameter.requires_grad_(True)
    set_active_adapter(model, name)
    return model


def set_active_adapter(model: nn.Module, name: str | None) -> None:
    """Switch every LoRA layer to adapter `name`; None runs the base model (a merged adapter is unmerged)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA layers: call apply_lora or load_lora first")
    if name is not None and not any(layer.has_adapter(name) for layer in layers.values()):
        known = sorted({n for layer in layers.values() for n in layer.adapter_names()})
        raise KeyError(f"no adapter named {name!r}; the model has {known}")
    for layer in layers.values():
        # An adapter that targets fewer layers leaves the others running the base weights.
        layer.set_active(name if name is None or layer.has_adapter(name) else None)


def merge_lora(model: nn.Module) -> None:
    """Fold the active adapter into the base weights: same outputs, no extra matmuls at inference.

    Each merged layer keeps a copy of its unmerged weight for an exact `unmerge_lora`; to drop it
    (and the adapters) for export, follow with `unload_lora`."""
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Take a merged adapter back out of the base weights, restoring them exactly."""
    for layer in lora_layers(model).values():
        layer.unmerge()


def unload_lora(model: nn.Module) -> nn.Module:
    """Replace every adapted layer by a plain nn.Linear / nn.Embedding holding its current weight (merge
    first to keep an adapter's effect); the result has exactly the base model's state-dict keys, ready
    to save or export."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (LoRALinear, TiedTokenRowsHead)):
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(module, child_name, plain)
            elif isinstance(child, TokenRowsEmbedding):
                plain = nn.Embedding(child.num_embeddings, child.embedding_dim, padding_idx=child.padding_idx, device="meta")
                plain.weight = child.weight
                setattr(module, child_name, plain)
    return model


def base_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the base model's weights (names, shapes, dtypes, bytes; adapters left out).

    A merged adapter changes the base weights, so saving or loading refuses to run while one is merged.
    """
    if any(layer.merged_adapter is not None for layer in lora_layers(model).values()):
        raise ValueError("an adapter is merged into the base weights: call unmerge_lora(model) first")
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if ".lora_" in key:
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def lora_state_dict(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """Adapter `name`'s weights alone: {'<module>.lora_A': (r, in), '<module>.lora_B': (out, r)}, and
    '<embedding>.lora_token_delta': (tokens, hidden) when it trains token rows."""
    state = {}
    for module_name, layer in lora_layers(model).items():
        if layer.has_adapter(name):
            for attribute, tensor in layer.adapter_state(name).items():
                state[f"{module_name}.{attribute}"] = tensor.detach()
    if not state:
        raise KeyError(f"the model has no adapter named {name!r}")
    return state


def _adapter_hyperparameters(model: nn.Module, name: str) -> dict:
    layers = {n: layer for n, layer in lora_layers(model).items() if layer.has_adapter(name)}
    linear = {n: layer for n, layer in layers.items() if isinstance(layer, LoRALinear)}
    first = next(iter(linear.values()))
    dropout = first.lora_dropout[name]
    rows = [layer.lora_token_ids[name].tolist() for layer in layers.values() if isinstance(layer, TokenRowsEmbedding)]
    return {
        "rank": int(first.lora_A[name].shape[0]),
        "alpha": first.lora_scaling[name] * first.lora_A[name].shape[0],
        "dropout": dropout.p if isinstance(dropout, nn.Dropout) else 0.0,
        "targets": sorted({n.rsplit(".", 1)[-1] for n in linear}),
        "trainable_tokens": rows[0] if rows else [],
    }


def save_lora(model: nn.Module, directory, name: str = "default") -> Path:
    """Write adapter `name` to `directory`: adapter.safetensors (A and B only) + adapter_config.json."""
    from safetensors.torch import save_file

    from minimind.files import atomic_save_bytes, atomic_write

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.cpu().contiguous() for key, tensor in lora_state_dict(model, name).items()}
    config = {
        "format_version": FORMAT_VERSION,
        "name": name,
        **_adapter_hyperparameters(model, name),
        "base_fingerprint": base_fingerprint(model),
    }
    atomic_write(directory / ADAPTER_WEIGHTS, lambda temp: save_file(state, temp, metadata={"format": "pt"}))
    atomic_save_bytes(directory / ADAPTER_CONFIG, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def load_lora(model: nn.Module, directory, name: str | None = None, check_base: bool = True) -> str:
    """Load an adapter saved by `save_lora` into the model, make it active, and return its name.

    The adapter is added under `name` (default: the name it was saved with). The base model's
    fingerprint must match the one recorded at save time unless check_base=False (for example
    after casting the base to another dtype on purpose).
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config_path, weights_path = directory / ADAPTER_CONFIG, directory / ADAPTER_WEIGHTS
    for path in (config_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file; save_lora writes {ADAPTER_WEIGHTS} and {ADAPTER_CONFIG}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}:{error.lineno}: not valid JSON ({error.msg})") from error
    for key in ("format_version", "name", "rank", "alpha", "dropout", "targets", "base_fingerprint"):
        if key not in config:
            raise ValueError(f"{config_path}: missing field {key!r}")
    if config["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{config_path}: format_version {config['format_version']} is not {FORMAT_VERSION}")
    if check_base:
        fingerprint = base_fingerprint(model)
        if fingerprint != config["base_fingerprint"]:
            raise ValueError(
                f"{directory}: this adapter was trained on a different base model (fingerprint "
                f"{config['base_fingerprint'][:12]}…, this model {fingerprint[:12]}…); load it onto the model it "
                "was trained from, or pass check_base=False if you changed the base on purpose"
            )
    name = config["name"] if name is None else name
    if any(layer.has_adapter(name) for layer in lora_layers(model).values()):
        raise ValueError(f"the model already has an adapter named {name!r}; pass another name")
    trainable = {id(p): p.requires_grad for p in model.parameters()}
    # `trainable_tokens` arrived after format 1's first adapters; those train no rows.
    apply_lora(model, config["rank"], config["alpha"], config["dropout"], config["targets"], name,
               trainable_tokens=config.get("trainable_tokens", []))
    state = load_file(str(weights_path))
    expected = lora_state_dict(model, name)
    if set(state) != set(expected):
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ValueError(f"{weights_path}: keys do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    layers = lora_layers(model)
    with torch.no_grad():
        for key, tensor in state.items():
            module_name, which = key.rsplit(".", 1)
            target = getattr(layers[module_name], which)[name]
            if target.shape != tensor.shape:
                raise ValueError(f"{weights_path}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(target.shape)}")
            target.copy_(tensor)
    # Loading is for inference or switching: restore what was trainable before, the loaded adapter stays frozen.
    for parameter in model.parameters():
        parameter.requires_grad_(trainable.get(id(parameter), False))
    return name
