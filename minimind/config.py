"""The MiniMind configuration: one dataclass and every named preset (the only place sizes live)."""
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

CONFIG_FILE = "config.json"

# YaRN context extension as upstream enables it at inference (`inference_rope_scaling=True`):
# positions beyond 2048 are reached by slowing down the low-frequency rotary channels 16x.
YARN_ROPE_SCALING = {
    "type": "yarn",
    "factor": 16,
    "original_max_position_embeddings": 2048,
    "beta_fast": 32,
    "beta_slow": 1,
    "attention_factor": 1.0,
}


def v2_intermediate_size(hidden_size: int) -> int:
    """MiniMind2's SwiGLU width: 8/3 of hidden (same parameters as a 4x GELU MLP), rounded up to 64."""
    return 64 * math.ceil(int(hidden_size * 8 / 3) / 64)


def v3_intermediate_size(hidden_size: int) -> int:
    """minimind-3's SwiGLU width: pi times hidden, rounded up to a multiple of 64."""
    return math.ceil(hidden_size * math.pi / 64) * 64


@dataclass
class MiniMindConfig:
    """Every hyper-parameter of a MiniMind model. Defaults are MiniMind2-Small (25.83M parameters).

    `head_dim` and `intermediate_size` may be given as None; they are then derived from
    `hidden_size` when the config is built (hidden/heads, and MiniMind2's 8/3 rule). To change
    `hidden_size` of an existing config, build a new one with `get_config(..., hidden_size=...)`.
    """

    vocab_size: int = 6400
    hidden_size: int = 512
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: Optional[int] = None
    intermediate_size: Optional[int] = None
    max_position_embeddings: int = 32768
    rope_theta: float = 1e6
    rope_scaling: Optional[dict] = None
    rms_norm_eps: float = 1e-5
    dropout: float = 0.0
    qk_norm: bool = False  # minimind-3 / Qwen3: RMSNorm on each query and key head before RoPE
    tie_word_embeddings: bool = True
    flash_attn: bool = True  # use F.scaled_dot_product_attention when attention weights are not requested
    # mixture of experts (MiniMind2-MoE: 4 routed experts, top-2, plus 1 shared expert)
    use_moe: bool = False
    n_routed_experts: int = 4
    num_experts_per_tok: int = 2
    n_shared_experts: int = 1
    aux_loss_alpha: float = 0.01
    seq_aux: bool = True
    norm_topk_prob: bool = True  # renormalise the top-k router weights to sum to 1 (when k > 1, as MiniMind2)
    # minimind-3 and Qwen3-MoE renormalise at k = 1 too: the chosen expert's weight is then exactly
    # 1 and the language-model loss no longer trains the router (upstream #858); off by default
    norm_top1_prob: bool = False
    # special token ids of the MiniMind tokenizer
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2

    def __post_init__(self):
        self._check_values()
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                    f"{self.num_attention_heads}; give head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = v2_intermediate_size(self.hidden_size)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads {self.num_key_value_heads} (each KV head serves a group of query heads)"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        if self.use_moe and not 1 <= self.num_experts_per_tok <= self.n_routed_experts:
            raise ValueError(
                f"num_experts_per_tok {self.num_experts_per_tok} must be between 1 and "
                f"n_routed_experts {self.n_routed_experts}"
            )
        if self.rope_scaling is not None:
            scaling_type = self.rope_scaling.get("type", self.rope_scaling.get("rope_type"))
            if scaling_type != "yarn":
                raise ValueError(f"rope_scaling type {scaling_type!r} is not supported (only 'yarn')")

    def _check_values(self) -> None:
        """Types and ranges of every field, checked before anything is derived or allocated
        (a config.json is untrusted input); ConfigError names the field."""
        counts = {"vocab_size": 1, "hidden_size": 1, "num_hidden_layers": 1, "num_attention_heads": 1,
                  "num_key_value_heads": 1, "max_position_embeddings": 1, "n_routed_experts": 1,
                  "num_experts_per_tok": 1, "n_shared_experts": 0, "pad_token_id": 0, "bos_token_id": 0,
                  "eos_token_id": 0}
        for name, least in counts.items():
            _check_int(name, getattr(self, name), least)
        for name in ("head_dim", "intermediate_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        for name in ("rope_theta", "rms_norm_eps"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ConfigError(name, f"{name} must be a finite number > 0, got {value!r}")
        if not (_is_number(self.dropout) and 0 <= self.dropout < 1):
            raise ConfigError("dropout", f"dropout must be in [0, 1), got {self.dropout!r}")
        if not (_is_number(self.aux_loss_alpha) and math.isfinite(self.aux_loss_alpha) and self.aux_loss_alpha >= 0):
            raise ConfigError("aux_loss_alpha", f"aux_loss_alpha must be a finite number >= 0, got {self.aux_loss_alpha!r}")
        for name in ("qk_norm", "tie_word_embeddings", "flash_attn", "use_moe", "seq_aux", "norm_topk_prob",
                     "norm_top1_prob"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.rope_scaling is not None:
            if not isinstance(self.rope_scaling, dict):
                raise ConfigError("rope_scaling", f"rope_scaling must be null or an object, got {self.rope_scaling!r}")
            for key, value in self.rope_scaling.items():
                if key not in ("type", "rope_type") and not (_is_number(value) and math.isfinite(value) and value > 0):
                    raise ConfigError("rope_scaling", f"rope_scaling.{key} must be a finite number > 0, got {value!r}")

    @property
    def num_key_value_groups(self) -> int:
        """How many query heads share one key/value head (1 = multi-head, heads = multi-query)."""
        return self.num_attention_heads // self.num_key_value_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config", lines: Optional[dict] = None) -> "MiniMindConfig":
        """The config of `values`; errors start with `source` (and `:line` when `lines` maps the
        field a ConfigError names to its line)."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a JSON object of MiniMindConfig fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown MiniMindConfig fields {unknown}")
        try:
            return cls(**values)
        except ConfigError as error:
            line = (lines or {}).get(error.field)
            raise ConfigError(error.field, f"{source}{f':{line}' if line else ''}: {error}") from None
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    def save(self, directory) -> Path:
        """Write `config.json` into `directory` (atomically) and return its path."""
        from minimind.files import atomic_save_bytes

        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_bytes(path, (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode())
        return path

    @classmethod
    def load(cls, directory) -> "MiniMindConfig":
        """Read `config.json` from `directory` (or from the file itself if a file is given)."""
        path = Path(directory)
        if path.is_dir():
            path = path / CONFIG_FILE
        text = path.read_text(encoding="utf-8")
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        return cls.from_dict(values, source=str(path), lines=field_lines(text))

    def num_parameters(self) -> int:
        """Parameter count computed from the shapes alone (tied embeddings counted once)."""
        h, d = self.hidden_size, self.head_dim
        attention = h * d * self.num_attention_heads * 2 + h * d * self.num_key_value_heads * 2
        if self.qk_norm:
            attention += 2 * d
        ffn = 3 * h * self.intermediate_size
        if self.use_moe:
            mlp = ffn * (self.n_routed_experts + self.n_shared_experts) + self.n_routed_experts * h
        else:
            mlp = ffn
        per_layer = attention + mlp + 2 * h  # two RMSNorm weights
        embedding = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return embedding + self.num_hidden_layers * per_layer + h


class ConfigError(ValueError):
    """A config field with a value of the wrong type or out of range; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(name, f"{name} must be an integer, got {value!r}")
    if value < least:
        raise ConfigError(name, f"{name} must be at least {least}, got {value}")


def field_lines(text: str) -> dict:
    """{field name: line number} of the top-level keys of a JSON object written one key per line
    (as `save` writes it), so an error can name the line of the value it is about."""
    lines = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.match(r'\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*:', line)
        if match:
            lines.setdefault(match.group(1), number)
    return lines


# upstream minimind-3 (Qwen3-style q/k norm); its MoE preset adds the experts to the same body
_MINIMIND3 = dict(hidden_size=768, num_hidden_layers=8, num_key_value_heads=4, qk_norm=True, rms_norm_eps=1e-6,
                  intermediate_size=v3_intermediate_size(768))

PRESETS: dict[str, dict] = {
    # upstream MiniMind2 family (parameter counts as upstream prints them)
    "minimind2-small": dict(hidden_size=512, num_hidden_layers=8),  # 25.83M
    "minimind2": dict(hidden_size=768, num_hidden_layers=16),  # 104.03M
    "minimind2-moe": dict(hidden_size=640, num_hidden_layers=8, use_moe=True),  # 145.03M
    "minimind3": _MINIMIND3,  # 63.91M
    # minimind-3's MoE: 4 routed experts, top-1 with its weight renormalised to 1, no shared expert,
    # Switch-style load balancing over the whole batch (router_aux_loss_coef 5e-4)
    "minimind3-moe": dict(
        _MINIMIND3,
        use_moe=True,
        n_routed_experts=4,
        num_experts_per_tok=1,
        n_shared_experts=0,
        norm_topk_prob=True,
        norm_top1_prob=True,
        aux_loss_alpha=5e-4,
        seq_aux=False,
    ),  # 198.42M
    # CPU-sized presets: the chapters' model, the distillation teacher, unit-test models
    "book": dict(
        vocab_size=2048,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    ),
    "book-teacher": dict(
        vocab_size=2048,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    ),
    "tiny": dict(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    ),
    "tiny-moe": dict(
        vocab_size=256,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        use_moe=True,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1,
    ),
}


def get_config(name: str, **overrides) -> MiniMindConfig:
    """The named preset with any field overridden, e.g. `get_config("book", dropout=0.1)`."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[name], **overrides}
    return MiniMindConfig.from_dict(values, source=f"preset {name!r}")
