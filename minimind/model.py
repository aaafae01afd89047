"""The MiniMind transformer: a Llama-style decoder whose weights load into upstream MiniMind2.

Read top to bottom: RMSNorm, rotary embeddings (+YaRN), the KV cache, attention (grouped-query,
SDPA fast path, explicit path that can return its weights), SwiGLU, mixture of experts, the
block, the model, and the causal LM `MiniMind` with its loss.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from minimind.config import MiniMindConfig
from minimind.losses import masked_cross_entropy


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean(x^2) + eps): LayerNorm without centring or bias."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in fp32 (bf16 sums of squares lose precision); cast back before the weight, as Llama
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.type_as(x)


# ----------------------------------------------------------------------------- rotary embeddings


def precompute_rope(head_dim: int, end: int, theta: float = 1e6, rope_scaling: Optional[dict] = None):
    """cos and sin tables, each (end, head_dim), for positions 0..end-1 in rotate-half layout.

    Channel pair (i, i + head_dim/2) turns by angle position * theta^(-2i/head_dim).
    With a YaRN `rope_scaling` dict (and end beyond its original context) the slow channels
    are interpolated by `factor` while the fast ones keep their frequency.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    attention_factor = 1.0
    if rope_scaling is not None:
        original = rope_scaling["original_max_position_embeddings"]
        factor = rope_scaling["factor"]
        attention_factor = rope_scaling.get("attention_factor", 1.0)
        if end / original > 1:
            # the channel index whose wavelength fits `rotations` turns into the original context
            def channel_for(rotations):
                return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

            low = max(math.floor(channel_for(rope_scaling["beta_fast"])), 0)
            high = min(math.ceil(channel_for(rope_scaling["beta_slow"])), head_dim // 2 - 1)
            ramp = ((torch.arange(head_dim // 2).float() - low) / max(high - low, 0.001)).clamp(0, 1)
            inv_freq = inv_freq * (1 - ramp) + inv_freq * ramp / factor
    angles = torch.outer(torch.arange(end).float(), inv_freq)  # (end, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (end, head_dim)
    return angles.cos() * attention_factor, angles.sin() * attention_factor


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate queries (B, H, T, d) and keys (B, KV, T, d) by their positions' angles.

    cos, sin: (T, d) for positions shared by the batch, or (B, T, d) per row.
    """
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    q_rotated = q * cos + rotate_half(q) * sin
    k_rotated = k * cos + rotate_half(k) * sin
    return q_rotated.type_as(q), k_rotated.type_as(k)


# ----------------------------------------------------------------------------- KV cache


class KVCache:
    """Keys and values of past tokens for every layer, in preallocated buffers.

    Each layer holds `keys`/`values` of shape (B, KV heads, capacity, head_dim) filled up to
    `length`; a step writes its new entries in place instead of concatenating (upstream
    re-copies the whole cache every token). If a step needs more room than `max_len`, the
    buffers double (amortised O(1) per token). The cache also remembers which slots are real
    tokens (`mask`, for left-padded batches) and each row's next position (`next_position`),
    so a row's real tokens get positions 0, 1, 2, … whatever padding precedes them.
    """

    def __init__(self, config: MiniMindConfig, batch_size: int, max_len: int, dtype=torch.float32, device="cpu"):
        self.num_layers = config.num_hidden_layers
        self.batch_size = batch_size
        self.length = 0
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        self.mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def capacity(self) -> int:
        return self.mask.size(1)

    def reserve(self, new_tokens: int) -> None:
        """Make room for `new_tokens` more entries, doubling the buffers if needed."""
        needed = self.length + new_tokens
        if needed <= self.capacity:
            return
        new_capacity = max(needed, 2 * self.capacity)

        def grown(buffer):
            bigger = buffer.new_zeros(*buffer.shape[:2], new_capacity, *buffer.shape[3:])
            bigger[:, :, : self.length] = buffer[:, :, : self.length]
            return bigger

        self.keys = [grown(k) for k in self.keys]
        self.values = [grown(v) for v in self.values]
        mask = self.mask.new_zeros(self.batch_size, new_capacity)
        mask[:, : self.length] = self.mask[:, : self.length]
        self.mask = mask

    def update(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        """Store this step's keys/values (B, KV, T, d) after the past ones; return all of them."""
        end = self.length + keys.size(2)
        self.keys[layer][:, :, self.length : end] = keys
        self.values[layer][:, :, self.length : end] = values
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


# ----------------------------------------------------------------------------- attention


def causal_mask(query_len: int, key_len: int, device=None) -> torch.Tensor:
    """(T, S) bool, True where query t may see key s; queries are the last T of the S positions."""
    past = key_len - query_len
    query_index = torch.arange(query_len, device=device)[:, None]
    key_index = torch.arange(key_len, device=device)[None, :]
    return key_index <= query_index + past


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads: `num_attention_heads` query heads share
    `num_key_value_heads` key/value heads (query head j reads KV head j // group size)."""

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.qk_norm = config.qk_norm
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.flash = config.flash_attn

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0, return_weights=False):
        """x: (B, T, hidden). mask: (B or 1, 1, T, S) bool of visible keys, or None for plain
        causal attention over all S keys. Returns (output, weights (B, H, T, S) or None)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, d)
        q, k = apply_rotary(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, KV, S, d), past keys first
        S = k.size(2)
        group = self.num_heads // self.num_kv_heads
        dropout = self.dropout if self.training else 0.0

        if self.flash and not return_weights:
            # enable_gqa lets the kernel read each KV head for its whole query group, so the
            # (B, H, S, d) copies that repeat_interleave would make are never materialised
            gqa = group > 1
            if mask is None and T == S:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, enable_gqa=gqa)
            elif mask is None and T == 1:  # one decoding step sees every key: no mask to build
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, enable_gqa=gqa)
            else:
                if mask is None:
                    mask = causal_mask(T, S, x.device)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, enable_gqa=gqa)
            weights = None
        else:
            k = k.repeat_interleave(group, dim=1)  # (B, H, S, d): query head j reads KV head j // group
            v = v.repeat_interleave(group, dim=1)
            if mask is None:
                mask = causal_mask(T, S, x.device)
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
            scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.float().softmax(dim=-1).type_as(q)
            out = F.dropout(weights, dropout, self.training) @ v  # (B, H, T, d)
        out = out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)
        return self.resid_dropout(self.o_proj(out)), (weights if return_weights else None)


# ----------------------------------------------------------------------------- feed-forward


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); the gate decides, per channel, how much of up(x) passes."""

    def __init__(self, config: MiniMindConfig, intermediate_size: Optional[int] = None):
        super().__init__()
        inner = intermediate_size or config.intermediate_size
        self.gate_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.down_proj = nn.Linear(inner, config.hidden_size, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class MoEFeedForward(nn.Module):
    """Mixture of experts: a router sends each token to its top-k of `n_routed_experts` SwiGLU
    experts (output = weighted sum), and every token also goes through the shared experts.

    The top-k weights are renormalised (`norm_topk_prob`) only when k > 1: with k = 1 the weight
    stays the router probability, so the LM loss still trains the router (upstream #858).
    `norm_top1_prob` renormalises at k = 1 too (weight exactly 1), as minimind-3 and Qwen3-MoE do.
    The load-balancing loss counts each of the k choices (upstream #797 kept a [k, E] axis).
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.num_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob and (config.num_experts_per_tok > 1 or config.norm_top1_prob)
        self.aux_loss_alpha = config.aux_loss_alpha
        self.seq_aux = config.seq_aux
        self.gate = nn.Linear(config.hidden_size, self.num_experts, bias=False)  # the router
        self.experts = nn.ModuleList(FeedForward(config) for _ in range(self.num_experts))
        self.shared_experts = nn.ModuleList(FeedForward(config) for _ in range(config.n_shared_experts))

    def route(self, x: torch.Tensor):
        """x: (B, T, hidden) → router probabilities (B, T, E), top-k weights (B, T, k), expert ids (B, T, k)."""
        probs = self.gate(x).float().softmax(dim=-1)
        topk_weight, topk_index = probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        return probs, topk_weight, topk_index

    def load_balancing_loss(self, probs: torch.Tensor, topk_index: torch.Tensor) -> torch.Tensor:
        """alpha * sum_e f_e * P_e, where f_e = share of the B*T*k assignments that went to expert e,
        times E (1 when balanced), and P_e = mean router probability of e. With `seq_aux` both
        are taken per sequence and the loss averaged over sequences."""
        B, T, E = probs.shape
        counts = F.one_hot(topk_index, E).float().sum(dim=2)  # (B, T, E): choices of each token
        if self.seq_aux:
            load = counts.sum(dim=1) * E / (T * self.top_k)  # (B, E)
            return self.aux_loss_alpha * (load * probs.mean(dim=1)).sum(dim=-1).mean()
        load = counts.sum(dim=(0, 1)) * E / (B * T * self.top_k)  # (E,)
        return self.aux_loss_alpha * (load * probs.mean(dim=(0, 1))).sum()

    def forward(self, x):
        """Returns (output (B, T, hidden), load-balancing loss)."""
        B, T, H = x.shape
        probs, topk_weight, topk_index = self.route(x)
        flat = x.reshape(-1, H)
        flat_index = topk_index.reshape(-1, self.top_k)
        flat_weight = topk_weight.reshape(-1, self.top_k).to(x.dtype)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = (flat_index == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                if self.training:  # touch the idle expert so distributed training sees a gradient for it
                    out = out + 0.0 * sum(p.sum() for p in expert.parameters())
                continue
            out = out.index_add(0, token, expert(flat[token]) * flat_weight[token, slot, None])
        for shared in self.shared_experts:
            out = out + shared(flat)
        aux = self.load_balancing_loss(probs, topk_index) if self.aux_loss_alpha > 0 else probs.new_zeros(())
        return out.view(B, T, H), aux


# ----------------------------------------------------------------------------- the model


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.self_attn = Attention(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoEFeedForward(config) if config.use_moe else FeedForward(config)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0, return_weights=False):
        """Returns (output, attention weights or None, aux loss tensor)."""
        attended, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer, return_weights)
        h = x + attended
        if isinstance(self.mlp, MoEFeedForward):
            mlp_out, aux = self.mlp(self.post_attention_layernorm(h))
        else:
            mlp_out, aux = self.mlp(self.post_attention_layernorm(h)), h.new_zeros((), dtype=torch.float32)
        return h + mlp_out, weights, aux


class MiniMindModel(nn.Module):
    """Token embeddings → `num_hidden_layers` blocks → final RMSNorm (hidden states, no LM head)."""

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        cos, sin = precompute_rope(
            config.head_dim, config.max_position_embeddings, config.rope_theta, config.rope_scaling
        )
        # derived from the config, so not saved with the weights
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # activation checkpointing for training (off by default; `MiniMind.gradient_checkpointing_enable`)
        self.gradient_checkpointing = False

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, return_attentions=False):
        """Returns (hidden (B, T, hidden), aux loss summed over layers, per-layer attention weights or None)."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        new_mask = _new_token_mask(attention_mask, past, T)  # (B, T) bool or None

        if position_ids is None:
            position_ids = _positions(new_mask, cache, B, T, input_ids.device)
        elif position_ids.dim() == 1:
            position_ids = position_ids[None]
        position_ids = position_ids.expand(B, T)
        # (a host sync, skipped while torch.compile traces the graph)
        if not torch.compiler.is_compiling() and int(position_ids.max()) >= self.rope_cos.size(0):
            raise ValueError(
                f"position {int(position_ids.max())} is beyond max_position_embeddings "
                f"{self.rope_cos.size(0)}; use a config with a longer context (or rope_scaling)"
            )
        if cache is not None:
            cache.reserve(T)
            cache.mask[:, past : past + T] = True if new_mask is None else new_mask
            # trailing padding repeats the last real position, so +1 is the next real token's position
            cache.next_position = position_ids.max(dim=1).values + 1
            key_is_real = cache.mask[:, : past + T]
        else:
            key_is_real = new_mask
        cos, sin = self.rope_cos[position_ids], self.rope_sin[position_ids]  # (B, T, d)

        mask = None  # None = plain causal attention over every key
        if key_is_real is not None and not bool(key_is_real.all()):
            mask = causal_mask(T, past + T, input_ids.device)[None, None] & key_is_real[:, None, None, :]
            # a padding query would see no key at all (NaN softmax): let every query see itself
            mask[..., torch.arange(T), past + torch.arange(T)] = True

        x = self.dropout(self.embed_tokens(input_ids))
        aux_loss = x.new_zeros((), dtype=torch.float32)
        attentions = [] if return_attentions else None
        checkpointed = self.gradient_checkpointing and self.training and cache is None and not return_attentions
        for i, block in enumerate(self.layers):
            if checkpointed:
                # keep only the block's input; its activations are recomputed in the backward pass
                x, weights, aux = torch.utils.checkpoint.checkpoint(block, x, cos, sin, mask, use_reentrant=False)
            else:
                x, weights, aux = block(x, cos, sin, mask, cache, i, return_attentions)
            aux_loss = aux_loss + aux
            if return_attentions:
                attentions.append(weights)
        if cache is not None:
            cache.length = past + T
        return self.norm(x), aux_loss, attentions


def _new_token_mask(attention_mask, past: int, T: int):
    """The padding mask of this step's T tokens (True = real), from a mask covering either
    past + T positions (the transformers convention) or only the T new ones."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.size(1) not in (T, past + T):
        raise ValueError(
            f"attention_mask must be (batch, {past + T}) or (batch, {T}); got {tuple(attention_mask.shape)}"
        )
    return attention_mask[:, -T:].bool()


def _positions(new_mask, cache, B: int, T: int, device) -> torch.Tensor:
    """Position of each new token: a row's real tokens count 0, 1, 2, … after its earlier ones;
    padding gets the position of the next real token (it is masked out anyway)."""
    start = cache.next_position[:, None] if cache is not None else torch.zeros(B, 1, dtype=torch.long, device=device)
    if new_mask is None:
        return start + torch.arange(T, device=device)[None, :]
    return start + (new_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T or logits_to_keep, vocab); (N, vocab) with logits_at
    loss: Optional[torch.Tensor] = None  # LM loss (without aux_loss)
    aux_loss: Optional[torch.Tensor] = None  # MoE load balancing, summed over layers; 0 for dense models
    cache: Optional[KVCache] = None
    hidden_states: Optional[torch.Tensor] = None  # final normed hidden states (B, T, hidden)
    attentions: Optional[list] = None  # per layer (B, H, T, S), only with return_attentions=True


class MiniMind(nn.Module):
    """The causal language model: `MiniMindModel` + a tied LM head.

    state_dict keys are MiniMind2's (= transformers Llama's): `model.embed_tokens.weight`,
    `model.layers.{i}.self_attn.q_proj.weight`, …, `model.norm.weight`, `lm_head.weight`.
    """

    def __init__(self, config: MiniMindConfig):
        super().__init__()
        self.config = config
        self.model = MiniMindModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        # N(0, 0.02) for every matrix (minimind-3 / GPT-2 practice); norms start at 1
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        logits_at: Optional[torch.Tensor] = None,
        return_attentions: bool = False,
    ) -> ModelOutput:
        """One forward pass.

        input_ids: (B, T) token ids. labels: (B, T) *unshifted* targets (labels[t] is predicted
        by logits[t-1]), IGNORE_INDEX (-100) where unsupervised; the loss is their token mean.
        attention_mask: (B, past+T) or (B, T), 1 = real token, 0 = padding (left padding works:
        each row's real tokens get positions 0, 1, 2, …). position_ids: (B, T) to override that.

        Generation: call `out = model(prompt_ids, attention_mask=mask, use_cache=True)` once,
        then `out = model(next_ids, attention_mask=mask, cache=out.cache, use_cache=True)` per
        step (mask may cover all positions so far or only the new ones). The cache is filled in
        place; pass `cache=KVCache(config, B, max_len, dtype)` to size it yourself.
        logits_to_keep: k > 0 computes logits for the last k positions only (0 = all).
        logits_at: (B, T) bool: compute logits only where True, returned as (N, vocab) in
        row-major order. A loss that supervises a fraction of the positions (SFT replies,
        reasoning, distillation) then skips the LM head and its softmax everywhere else.
        return_attentions: run the explicit attention path and return each layer's weights.
        """
        if use_cache and cache is None:
            cache = KVCache(
                self.config,
                input_ids.size(0),
                max(2 * input_ids.size(1), 64),
                self.lm_head.weight.dtype,
                input_ids.device,
            )
        hidden, aux_loss, attentions = self.model(
            input_ids, attention_mask, position_ids, cache, return_attentions
        )
        if logits_at is not None:
            if labels is not None or logits_to_keep:
                raise ValueError("logits_at cannot be combined with labels or logits_to_keep")
            if logits_at.shape != input_ids.shape or logits_at.dtype != torch.bool:
                raise ValueError(
                    f"logits_at must be a bool tensor shaped like input_ids {tuple(input_ids.shape)}, "
                    f"got {logits_at.dtype} {tuple(logits_at.shape)}"
                )
            hidden_for_logits = hidden[logits_at]  # (N, hidden): the LM head runs on these rows only
        elif logits_to_keep:
            if labels is not None:
                raise ValueError("logits_to_keep cannot be combined with labels (the loss needs every logit)")
            hidden_for_logits = hidden[:, -logits_to_keep:]
        else:
            hidden_for_logits = hidden
        logits = self.lm_head(hidden_for_logits)
        loss = masked_cross_entropy(logits, labels) if labels is not None else None
        return ModelOutput(
            logits=logits,
            loss=loss,
            aux_loss=aux_loss,
            cache=cache if (use_cache or cache is not None) else None,
            hidden_states=hidden,
            attentions=attentions,
        )

    def gradient_checkpointing_enable(self, enabled: bool = True) -> None:
        """Trade compute for memory in training: each block keeps only its input for the backward
        pass and recomputes the rest (one extra forward per block, same gradients). Training
        memory then holds about one block's activations instead of all of them."""
        self.model.gradient_checkpointing = enabled

    def num_parameters(self) -> int:
        """Distinct parameters (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())
