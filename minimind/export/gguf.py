"""Export to GGUF, the single-file format of llama.cpp and Ollama, plus an Ollama `Modelfile`.

A dense MiniMind is a Llama (MiniMind2 layout) or a Qwen3 (q/k-norm, minimind-3 layout) as far
as llama.cpp is concerned, and minimind-3's MoE a Qwen3-MoE (`qwen3moe`: experts stacked into one
tensor each for gate, up and down; llama.cpp renormalises the top-k weights, so only a MoE that
does is exported); the file uses that architecture, the tensor names come from the `gguf`
package's own name map for it. Three details decide whether llama.cpp reproduces our
model, and each has a test:

- Rotary layout. We (like transformers) rotate the two halves of each head, `(x_i, x_{i+d/2})`;
  llama.cpp's `llama` architecture rotates adjacent pairs `(x_{2i}, x_{2i+1})`. So the rows of
  every head of W_q and W_k are permuted to put each half-pair side by side (what llama.cpp's own
  converter does for Llama checkpoints). Its `qwen3` architecture rotates halves: no permutation.
- Pre-tokenization (`tokenizer.ggml.pre`). MiniMind2's tokenizer splits text with GPT-2's regex →
  "gpt-2". Ours first splits every digit off (→ "starcoder": a digit split, then GPT-2's regex)
  and isolates runs of CJK characters, which llama.cpp cannot express; no merge of our vocabulary
  spans a Latin–CJK boundary, so the ids come out the same (checked on the book's corpus).
- Token types: ids 0–2 are control tokens (never produced from text unless asked), the reasoning
  tags user-defined (always matched whole), unused padding rows up to the model's vocabulary.

    python -m minimind.export gguf --model sft --out out/minimind.gguf [--outtype f16|q8_0]

q8_0 is llama.cpp's 8-bit type: each block of 32 consecutive weights of a row is stored as 32
int8 values and one f16 scale (amax / 127), 8.5 bits per weight; every matrix whose rows are a
multiple of 32 long is written so (the token embedding too, as llama.cpp's converter does), the
others in f16, the norms in f32. The quantisation is `gguf.quants.quantize`, the reference
implementation llama.cpp's Python tools use.
    ollama create minimind -f out/Modelfile && ollama run minimind
"""
import json
from pathlib import Path

import numpy as np
import torch

from minimind.formats import renormalises_top_k
from minimind.tokenizer import BOS_ID, CHAT_TEMPLATES, DEFAULT_SYSTEM_PROMPT, EOS_ID, PAD_ID

GGUF_DTYPES = ("f32", "f16", "q8_0")
Q8_0_BLOCK = 32  # weights per q8_0 block (one f16 scale each)

# Ollama's template language is Go's text/template; this renders exactly our chat template
# (default system prompt when none is given) followed by the generation prompt.
OLLAMA_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n"
    "{{ else }}<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n{{ end }}"
    "{{ range .Messages }}{{ if ne .Role \"system\" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}{{ end }}"
    "<|im_start|>assistant\n"
)


def permute_for_interleaved_rope(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder the rows of each head of a q/k projection (num_heads·d, hidden) so that output
    channels i and i + d/2 (a rotate-half pair) become channels 2i and 2i + 1 (an adjacent pair)."""
    rows = weight.shape[0]
    head_dim = rows // num_heads
    return weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def gguf_pre_tokenizer(tokenizer) -> str:
    """The llama.cpp pre-tokenizer name that splits text as `tokenizer` does (see module doc)."""
    state = json.loads(tokenizer.backend.to_str())
    pre = state.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = []
    for step in steps:
        kind = step.get("type")
        if kind == "Split" and _is_cjk_split(step):
            continue  # no llama.cpp counterpart; harmless (module doc)
        if kind == "Digits" and step.get("individual_digits"):
            kinds.append("digits")
        elif kind == "ByteLevel" and step.get("use_regex", True) and not step.get("add_prefix_space", False):
            kinds.append("bytelevel")
        else:
            raise ValueError(f"{tokenizer.source}: pre-tokenizer step {step} has no llama.cpp equivalent")
    if kinds == ["bytelevel"]:
        return "gpt-2"
    if kinds == ["digits", "bytelevel"]:
        return "starcoder"
    raise ValueError(f"{tokenizer.source}: pre-tokenizer {kinds} has no llama.cpp equivalent")


def _is_cjk_split(step: dict) -> bool:
    from minimind.tokenizer import CJK_CHAR, CJK_RUN

    return step.get("pattern", {}).get("Regex") in (CJK_CHAR, CJK_RUN) and step.get("behavior") == "Isolated"


def tokenizer_fields(tokenizer, vocab_size: int) -> dict:
    """tokens, token types, merges of a byte-level BPE tokenizer, padded to `vocab_size` rows."""
    import gguf

    state = json.loads(tokenizer.backend.to_str())
    if state["model"]["type"] != "BPE":
        raise ValueError(f"{tokenizer.source}: only byte-level BPE tokenizers can be exported to GGUF")
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's {vocab_size}")
    by_id = {token_id: token for token, token_id in tokenizer.backend.get_vocab(with_added_tokens=True).items()}
    added = {t["id"]: t for t in state["added_tokens"]}
    tokens, types = [], []
    for token_id in range(vocab_size):
        if token_id in added:
            tokens.append(added[token_id]["content"])
            types.append(gguf.TokenType.CONTROL if added[token_id]["special"] else gguf.TokenType.USER_DEFINED)
        elif token_id in by_id:
            tokens.append(by_id[token_id])
            types.append(gguf.TokenType.NORMAL)
        else:  # rows of the embedding no token uses (model vocabulary larger than the tokenizer's)
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    return {"tokens": tokens, "types": types, "merges": merges}


def _tensors(model, architecture: str, dtype: str):
    """(gguf name, numpy array, raw GGML type or None) for every weight, in the layout llama.cpp
    expects; with q8_0 the array is the quantised bytes."""
    import gguf

    config = model.config
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen3": gguf.MODEL_ARCH.QWEN3, "qwen3moe": gguf.MODEL_ARCH.QWEN3MOE}
    names = gguf.get_tensor_name_map(arch[architecture], config.num_hidden_layers)
    state = model.state_dict()
    for key, tensor in state.items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp falls back to token_embd when `output` is absent
        if ".mlp.experts." in key:  # stacked per layer: (experts, out, in) under experts.{gate,up,down}_proj
            layer, expert, part = key.split(".")[2], key.split(".")[5], key.split(".")[6]
            if expert != "0":
                continue
            prefix = f"model.layers.{layer}.mlp.experts."
            key = f"{prefix}{part}.weight"
            tensor = torch.stack([state[f"{prefix}{e}.{part}.weight"] for e in range(config.n_routed_experts)])
        tensor = tensor.detach().float().cpu()
        if architecture == "llama" and key.endswith("self_attn.q_proj.weight"):
            tensor = permute_for_interleaved_rope(tensor, config.num_attention_heads)
        elif architecture == "llama" and key.endswith("self_attn.k_proj.weight"):
            tensor = permute_for_interleaved_rope(tensor, config.num_key_value_heads)
        name = names.get_name(key, try_suffixes=(".weight",))
        if name is None:
            raise ValueError(f"no GGUF name for {key}")
        # norms stay f32, as in llama.cpp's own f16 and q8_0 files
        if dtype == "q8_0" and tensor.dim() > 1 and tensor.shape[-1] % Q8_0_BLOCK == 0:
            yield name, gguf.quants.quantize(tensor.numpy(), gguf.GGMLQuantizationType.Q8_0), \
                gguf.GGMLQuantizationType.Q8_0
            continue
        half = dtype in ("f16", "q8_0") and tensor.dim() > 1
        yield name, tensor.numpy().astype(np.float16 if half else np.float32), None


def export_gguf(model, tokenizer, out_path, dtype: str = "f32", name: str = "MiniMind",
                modelfile: bool = True) -> Path:
    """Write `model` + `tokenizer` as a GGUF file (f32, f16 or q8_0), and an Ollama `Modelfile` beside it.

    Returns the GGUF path. minimind-3's MoE is written as `qwen3moe`; other MoE models are refused
    (llama.cpp has no architecture with MiniMind2-MoE's shared experts and gating).
    """
    import gguf

    from minimind.files import atomic_save_bytes, atomic_write

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {GGUF_DTYPES}, got {dtype!r}")
    config = model.config
    if config.use_moe and not (config.qk_norm and config.n_shared_experts == 0 and renormalises_top_k(config)):
        raise ValueError("GGUF export supports dense models and minimind-3's MoE only (qwen3moe: q/k-norm, no "
                         "shared expert, top-k weights renormalised); llama.cpp has no architecture matching this "
                         "MoE (MiniMind2-MoE's routed + shared experts, or unnormalised top-1 weights)")
    if config.rope_scaling is not None:
        raise ValueError("GGUF export of YaRN-scaled rotary embeddings is not supported; export with rope_scaling=None")
    architecture = "qwen3moe" if config.use_moe else "qwen3" if config.qk_norm else "llama"
    fields = tokenizer_fields(tokenizer, config.vocab_size)
    pre = gguf_pre_tokenizer(tokenizer)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write(temp_path: str) -> None:
        writer = gguf.GGUFWriter(temp_path, arch=architecture)
        writer.add_name(name)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        if config.use_moe:
            writer.add_expert_count(config.n_routed_experts)
            writer.add_expert_used_count(config.num_experts_per_tok)
            writer.add_expert_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(fields["tokens"])
        writer.add_token_types(fields["types"])
        writer.add_token_merges(fields["merges"])
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_pad_token_id(PAD_ID)
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        writer.add_chat_template(CHAT_TEMPLATES[tokenizer.chat_template])
        for tensor_name, array, raw_dtype in _tensors(model, architecture, dtype):
            writer.add_tensor(tensor_name, array, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(out_path, write)
    if modelfile:
        atomic_save_bytes(out_path.parent / "Modelfile", ollama_modelfile(out_path.name, config).encode())
    return out_path


def ollama_modelfile(gguf_name: str, config) -> str:
    """An Ollama Modelfile for the GGUF file `gguf_name` in the same folder."""
    return (
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{OLLAMA_TEMPLATE}"""\n'
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|im_start|>"\n'
        f"PARAMETER num_ctx {config.max_position_embeddings}\n"
        "PARAMETER temperature 0.7\n"
        "PARAMETER top_p 0.9\n"
    )
