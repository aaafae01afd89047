"""GGUF export, read back with `gguf.GGUFReader`: metadata, tokenizer fields, tensor names, shapes
and values; a forward pass written from llama.cpp's conventions (adjacent-pair RoPE for `llama`)
on the file's tensors alone reproduces our logits; llama.cpp's pre-tokenizer regexes with our BPE
reproduce our token ids; minimind-3's MoE as `qwen3moe`; the Ollama Modelfile."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf import GGUFReader

from minimind.export.gguf import export_gguf, gguf_pre_tokenizer, permute_for_interleaved_rope
from minimind.tokenizer import CHAT_TEMPLATE, MiniMindTokenizer
from inference_helpers import tiny_model, tiny_tokenizer

MINIMIND2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "reference" / "minimind2_tokenizer"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def field(reader, key):
    return reader.get_field(key).contents()


def read_tensors(reader) -> dict:
    """name → float array (q8_0 tensors dequantised, as llama.cpp computes with them)."""
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type == gguf.GGMLQuantizationType.Q8_0
            else np.array(t.data) for t in reader.tensors}


def test_metadata_and_tokenizer_fields(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size + 5, max_position_embeddings=512)  # 5 embedding rows no token uses
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf")
    reader = GGUFReader(path)
    config = model.config
    assert field(reader, "general.architecture") == "llama"
    expected = {"llama.block_count": config.num_hidden_layers, "llama.context_length": 512,
                "llama.embedding_length": config.hidden_size, "llama.feed_forward_length": config.intermediate_size,
                "llama.attention.head_count": config.num_attention_heads,
                "llama.attention.head_count_kv": config.num_key_value_heads,
                "llama.rope.dimension_count": config.head_dim, "llama.vocab_size": config.vocab_size,
                "general.file_type": 0, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
                "tokenizer.ggml.padding_token_id": 0}
    for key, value in expected.items():
        assert field(reader, key) == value, key
    assert field(reader, "llama.rope.freq_base") == pytest.approx(config.rope_theta)
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(config.rms_norm_eps)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "starcoder"
    assert field(reader, "tokenizer.ggml.add_bos_token") is False
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE

    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == config.vocab_size
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    assert all(tokens[i] == t for t, i in vocab.items())
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and types[:3] == [3, 3, 3]
    assert types[tokenizer.token_to_id("<think>")] == gguf.TokenType.USER_DEFINED
    assert types[-5:] == [gguf.TokenType.UNUSED] * 5
    assert types[300] == gguf.TokenType.NORMAL
    merges = field(reader, "tokenizer.ggml.merges")
    state = json.loads(tokenizer.backend.to_str())
    assert merges == [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]


def test_tensors_names_shapes_and_values(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size)
    reader = GGUFReader(export_gguf(model, tokenizer, tmp_path / "m.gguf"))
    tensors = {t.name: t for t in reader.tensors}
    config = model.config
    expected_names = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{part}.weight" for i in range(config.num_hidden_layers)
        for part in ("attn_q", "attn_k", "attn_v", "attn_output", "attn_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(tensors) == expected_names  # tied embeddings: no separate output.weight
    state = model.state_dict()
    q = state["model.layers.1.self_attn.q_proj.weight"]
    # GGUF lists dimensions fastest-first: (in, out) for a torch (out, in) matrix
    assert list(tensors["blk.1.attn_q.weight"].shape) == [q.shape[1], q.shape[0]]
    assert np.array_equal(tensors["blk.1.attn_q.weight"].data,
                          permute_for_interleaved_rope(q, config.num_attention_heads).numpy())
    assert np.array_equal(tensors["blk.0.ffn_down.weight"].data, state["model.layers.0.mlp.down_proj.weight"].numpy())
    assert np.array_equal(tensors["token_embd.weight"].data, state["model.embed_tokens.weight"].numpy())
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def rms_norm(x, weight, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def llama_cpp_forward(path, ids) -> np.ndarray:
    """Logits of `ids` computed from the GGUF file alone, with llama.cpp's conventions: RoPE
    rotates adjacent pairs (x[2i], x[2i+1]) for `llama` and halves (x[i], x[i+d/2]) for `qwen3` and
    `qwen3moe`, whose experts are a softmax router's top `expert_used_count`, weights renormalised."""
    reader = GGUFReader(path)
    arch = field(reader, "general.architecture")
    meta = lambda key: field(reader, f"{arch}.{key}")  # noqa: E731
    w = {name: array.astype(np.float64) for name, array in read_tensors(reader).items()}
    heads, kv_heads = meta("attention.head_count"), meta("attention.head_count_kv")
    head_dim, eps, base = meta("rope.dimension_count"), meta("attention.layer_norm_rms_epsilon"), meta("rope.freq_base")
    T = len(ids)
    x = w["token_embd.weight"][ids]
    angles = np.arange(T)[:, None] * base ** (-np.arange(0, head_dim, 2) / head_dim)  # (T, d/2)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]

    def rope(t):  # t: (T, heads, d)
        if arch == "llama":
            even, odd = t[..., 0::2], t[..., 1::2]
            out = np.empty_like(t)
            out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
            return out
        first, second = t[..., : head_dim // 2], t[..., head_dim // 2:]
        return np.concatenate([first * cos - second * sin, first * sin + second * cos], -1)

    for layer in range(meta("block_count")):
        p = lambda name: w[f"blk.{layer}.{name}.weight"]  # noqa: E731
        h = rms_norm(x, p("attn_norm"), eps)
        q = (h @ p("attn_q").T).reshape(T, heads, head_dim)
        k = (h @ p("attn_k").T).reshape(T, kv_heads, head_dim)
        v = (h @ p("attn_v").T).reshape(T, kv_heads, head_dim)
        if arch in ("qwen3", "qwen3moe"):
            q, k = rms_norm(q, p("attn_q_norm"), eps), rms_norm(k, p("attn_k_norm"), eps)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(head_dim)
        scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
        attn = np.exp(scores - scores.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        x = x + np.einsum("hts,shd->thd", attn, v).reshape(T, heads * head_dim) @ p("attn_output").T
        h = rms_norm(x, p("ffn_norm"), eps)
        if arch != "qwen3moe":
            gate = h @ p("ffn_gate").T
            x = x + ((gate / (1 + np.exp(-gate))) * (h @ p("ffn_up").T)) @ p("ffn_down").T
            continue
        logits = h @ p("ffn_gate_inp").T  # (T, experts)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        chosen = np.argsort(-probs, axis=-1)[:, :meta("expert_used_count")]
        weights = np.take_along_axis(probs, chosen, -1)
        weights /= weights.sum(-1, keepdims=True)
        for t in range(T):
            for e, weight in zip(chosen[t], weights[t]):
                gate = p("ffn_gate_exps")[e] @ h[t]
                x[t] += weight * (p("ffn_down_exps")[e] @ ((gate / (1 + np.exp(-gate))) * (p("ffn_up_exps")[e] @ h[t])))
    x = rms_norm(x, w["output_norm.weight"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T


@pytest.mark.parametrize("qk_norm", [False, True])
def test_llama_cpp_style_forward_on_the_file_equals_our_logits(tokenizer, tmp_path, qk_norm):
    model = tiny_model(tokenizer.vocab_size, qk_norm=qk_norm, std=0.1)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf")
    assert field(GGUFReader(path), "general.architecture") == ("qwen3" if qk_norm else "llama")
    ids = tokenizer.encode("Pelum lives in Varo. 佩伦住在瓦罗。")
    ours = model(torch.tensor([ids])).logits[0].detach().double().numpy()
    theirs = llama_cpp_forward(path, ids)
    assert np.abs(ours - theirs).max() < 1e-4
    # without the row permutation the adjacent-pair rotation would compute something else
    if not qk_norm:
        unpermuted = tmp_path / "wrong.gguf"
        import minimind.export.gguf as module

        original = module.permute_for_interleaved_rope
        module.permute_for_interleaved_rope = lambda weight, heads: weight
        try:
            export_gguf(model, tokenizer, unpermuted, modelfile=False)
        finally:
            module.permute_for_interleaved_rope = original
        assert np.abs(ours - llama_cpp_forward(unpermuted, ids)).max() > 1e-2


def test_f16_export_halves_matrices_and_keeps_norms_f32(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size, std=0.1)
    path = export_gguf(model, tokenizer, tmp_path / "m16.gguf", dtype="f16")
    reader = GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    assert field(reader, "general.file_type") == 1
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    ids = tokenizer.encode("Who are you?")
    ours = model(torch.tensor([ids])).logits[0].detach().double().numpy()
    assert np.abs(ours - llama_cpp_forward(path, ids)).max() < 2e-2
    assert path.stat().st_size < export_gguf(model, tokenizer, tmp_path / "m32.gguf").stat().st_size * 0.6


def q8_0_error_bound(weights: np.ndarray) -> np.ndarray:
    """The most a q8_0 round trip may move each weight: half a step of its block's scale
    (amax / 127), plus the scale's own f16 rounding (≤ 2⁻¹¹ relative) times the largest |q| = 127."""
    blocks = np.abs(weights.reshape(*weights.shape[:-1], -1, 32)).max(-1, keepdims=True)
    bound = blocks / 127 * 0.5 + blocks * 2.0**-11 + 1e-7
    return np.broadcast_to(bound, (*bound.shape[:-1], 32)).reshape(weights.shape)


def test_q8_0_export_dequantises_to_the_weights_within_the_q8_0_bound(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size + 5, std=0.1)
    reader = GGUFReader(export_gguf(model, tokenizer, tmp_path / "m8.gguf", dtype="q8_0", modelfile=False))
    exact = read_tensors(GGUFReader(export_gguf(model, tokenizer, tmp_path / "m32.gguf", modelfile=False)))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0 == 7
    assert set(types) == set(exact)
    Q8_0, F32 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32
    for name, array in read_tensors(reader).items():
        assert array.shape == exact[name].shape, name
        if exact[name].ndim == 1:
            assert types[name] == F32 and np.array_equal(array, exact[name]), name  # norms stay exact
            continue
        assert types[name] == Q8_0, name  # every matrix, the token embedding too (rows of 64)
        error = np.abs(array - exact[name])
        assert (error <= q8_0_error_bound(exact[name])).all(), name
        assert error.max() > 0, name  # it really was quantised
    # a coarser type would break the bound: 4 bits per weight (15 levels) instead of 8
    embedding = exact["token_embd.weight"]
    scale = np.abs(embedding.reshape(-1, 32)).max(-1, keepdims=True) / 7
    coarse = (np.round(embedding.reshape(-1, 32) / scale) * scale).reshape(embedding.shape)
    assert not (np.abs(coarse - embedding) <= q8_0_error_bound(embedding)).all()
    # the file still computes our logits closely, and is about half the size of f16
    ids = tokenizer.encode("Who are you?")
    ours = model(torch.tensor([ids])).logits[0].detach().double().numpy()
    assert np.abs(ours - llama_cpp_forward(tmp_path / "m8.gguf", ids)).max() < 5e-2
    f16 = export_gguf(model, tokenizer, tmp_path / "m16.gguf", dtype="f16", modelfile=False)
    assert (tmp_path / "m8.gguf").stat().st_size < f16.stat().st_size * 0.7


def test_q8_0_metadata_and_tokenizer_are_those_of_the_f16_export(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size, std=0.1)
    q8 = GGUFReader(export_gguf(model, tokenizer, tmp_path / "m8.gguf", dtype="q8_0", modelfile=False))
    f16 = GGUFReader(export_gguf(model, tokenizer, tmp_path / "m16.gguf", dtype="f16", modelfile=False))
    keys = {k for k in f16.fields if not k.startswith("GGUF.")}
    assert keys == {k for k in q8.fields if not k.startswith("GGUF.")}
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template"} <= keys
    for key in keys - {"general.file_type"}:
        assert field(q8, key) == field(f16, key), key
    assert (field(f16, "general.file_type"), field(q8, "general.file_type")) == (1, 7)


def test_q8_0_keeps_a_matrix_whose_rows_do_not_fill_blocks_in_f16(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size, std=0.1, intermediate_size=80)  # ffn_down rows: 80 = 2.5 blocks
    reader = GGUFReader(export_gguf(model, tokenizer, tmp_path / "m8.gguf", dtype="q8_0", modelfile=False))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.F16
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0
    ids = tokenizer.encode("Who are you?")
    ours = model(torch.tensor([ids])).logits[0].detach().double().numpy()
    assert np.abs(ours - llama_cpp_forward(tmp_path / "m8.gguf", ids)).max() < 5e-2


def test_outtype_q8_0_from_the_command_line(tmp_path):
    from inference_helpers import save_tiny_checkpoint
    from minimind.export.__main__ import main

    save_tiny_checkpoint(tmp_path / "m")
    assert main(["gguf", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "m.gguf"), "--outtype", "q8_0"]) == 0
    reader = GGUFReader(tmp_path / "m.gguf")
    assert field(reader, "general.file_type") == 7
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32}
    with pytest.raises(SystemExit):
        main(["gguf", "--model", str(tmp_path / "m"), "--out", str(tmp_path / "x.gguf"), "--outtype", "q4_0"])


def llama_cpp_pretokenize(text: str, pre: str) -> list[str]:
    """llama.cpp's `unicode_regex_split`: each regex splits every current piece into its matches
    and the unmatched text between them, in order."""
    import regex

    gpt2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
    expressions = {"gpt-2": [gpt2], "starcoder": [r"\p{N}", gpt2]}[pre]
    pieces = [text]
    for expression in expressions:
        split = []
        for piece in pieces:
            position = 0
            for match in regex.finditer(expression, piece):
                if match.start() > position:
                    split.append(piece[position:match.start()])
                split.append(match.group())
                position = match.end()
            if position < len(piece):
                split.append(piece[position:])
        pieces = split
    return pieces


def llama_cpp_encode(tokenizer, text: str, pre: str) -> list[int]:
    from tokenizers.pre_tokenizers import ByteLevel

    to_bytes = ByteLevel(add_prefix_space=False, use_regex=False)
    ids = []
    for piece in llama_cpp_pretokenize(text, pre):
        ((mapped, _),) = to_bytes.pre_tokenize_str(piece)
        ids += [token.id for token in tokenizer.backend.model.tokenize(mapped)]
    return ids


def test_llama_cpp_pre_tokenizer_reproduces_our_ids_on_the_book_corpus():
    from minimind import zoo
    from minimind.data.synthetic import dataset_path
    from minimind.data.jsonl import texts_from_jsonl

    book = zoo.tokenizer()
    pre = gguf_pre_tokenizer(book)
    assert pre == "starcoder"
    texts = [t for i, t in enumerate(texts_from_jsonl(dataset_path("pretrain", "val"))) if i < 400]
    texts += ["Pelum住在瓦罗, 23岁. MiniMind说: 123+456=579!", "  spaces\n\nand\ttabs  ", "Ça va? 🙂 élan"]
    mismatches = [t for t in texts if llama_cpp_encode(book, t, pre) != book.encode(t)]
    assert not mismatches, mismatches[:3]


@pytest.mark.skipif(not MINIMIND2_TOKENIZER.exists(), reason="MiniMind2's tokenizer files are not beside the checkout")
def test_minimind2_tokenizer_maps_to_gpt2_pre_tokenizer():
    upstream = MiniMindTokenizer.from_pretrained(MINIMIND2_TOKENIZER)
    assert gguf_pre_tokenizer(upstream) == "gpt-2"
    text = "你好，MiniMind2! It has 25.8M parameters and 8 layers."
    assert llama_cpp_encode(upstream, text, "gpt-2") == upstream.encode(text)


def test_modelfile_points_at_the_gguf_with_chatml_stops(tokenizer, tmp_path):
    model = tiny_model(tokenizer.vocab_size)
    path = export_gguf(model, tokenizer, tmp_path / "minimind.gguf")
    modelfile = (tmp_path / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./minimind.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and f"num_ctx {model.config.max_position_embeddings}" in modelfile
    assert "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n" in modelfile
    assert path.exists() and not list(tmp_path.glob(".*.tmp"))


MINIMIND3_MOE = dict(qk_norm=True, rms_norm_eps=1e-6, use_moe=True, n_routed_experts=4, num_experts_per_tok=1,
                     n_shared_experts=0, norm_top1_prob=True, std=0.1)


@pytest.mark.parametrize("top_k", [1, 2])
def test_minimind3_moe_exports_as_qwen3moe_and_the_file_computes_our_logits(tokenizer, tmp_path, top_k):
    model = tiny_model(tokenizer.vocab_size, **{**MINIMIND3_MOE, "num_experts_per_tok": top_k})
    path = export_gguf(model, tokenizer, tmp_path / "moe.gguf")
    reader = GGUFReader(path)
    config = model.config
    assert field(reader, "general.architecture") == "qwen3moe"
    assert (field(reader, "qwen3moe.expert_count"), field(reader, "qwen3moe.expert_used_count"),
            field(reader, "qwen3moe.expert_feed_forward_length")) == (4, top_k, config.intermediate_size)
    tensors = {t.name: t for t in reader.tensors}
    assert "blk.0.ffn_gate.weight" not in tensors and "blk.1.attn_q_norm.weight" in tensors
    state = model.state_dict()
    assert np.array_equal(np.array(tensors["blk.1.ffn_down_exps.weight"].data),
                          torch.stack([state[f"model.layers.1.mlp.experts.{e}.down_proj.weight"]
                                       for e in range(4)]).numpy())
    assert list(tensors["blk.0.ffn_gate_inp.weight"].shape) == [config.hidden_size, 4]
    ids = tokenizer.encode("Pelum lives in Varo. 佩伦住在瓦罗。")
    ours = model(torch.tensor([ids])).logits[0].detach().double().numpy()
    assert np.abs(ours - llama_cpp_forward(path, ids)).max() < 1e-4


def test_minimind3_dense_exports_as_qwen3_and_the_template_follows_the_tokenizer(tokenizer, tmp_path):
    from minimind.tokenizer import MINIMIND3_CHAT_TEMPLATE

    model = tiny_model(tokenizer.vocab_size, qk_norm=True, rms_norm_eps=1e-6, num_key_value_heads=2, std=0.1)
    minimind3 = MiniMindTokenizer(tokenizer.backend, chat_template="minimind3")
    reader = GGUFReader(export_gguf(model, minimind3, tmp_path / "dense.gguf"))
    assert field(reader, "general.architecture") == "qwen3"
    assert field(reader, "tokenizer.chat_template") == MINIMIND3_CHAT_TEMPLATE


def test_moe_and_bad_dtype_are_refused(tokenizer, tmp_path):
    moe = tiny_model(tokenizer.vocab_size, use_moe=True)
    with pytest.raises(ValueError, match="dense"):
        export_gguf(moe, tokenizer, tmp_path / "moe.gguf")
    unnormalised = tiny_model(tokenizer.vocab_size, **{**MINIMIND3_MOE, "norm_top1_prob": False})
    with pytest.raises(ValueError, match="renormalised"):
        export_gguf(unnormalised, tokenizer, tmp_path / "moe.gguf")
    with pytest.raises(ValueError, match="dtype"):
        export_gguf(tiny_model(tokenizer.vocab_size), tokenizer, tmp_path / "x.gguf", dtype="q4")
    assert not (tmp_path / "moe.gguf").exists()


GO_RENDERER = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct{ Role, Content string }

type Data struct {
	System   string
	Messages []Message
}

func main() {
	text, _ := os.ReadFile(os.Args[1])
	raw, _ := os.ReadFile(os.Args[2])
	var data Data
	if err := json.Unmarshal(raw, &data); err != nil {
		panic(err)
	}
	if err := template.Must(template.New("t").Parse(string(text))).Execute(os.Stdout, data); err != nil {
		panic(err)
	}
}
"""


@pytest.mark.skipif(__import__("shutil").which("go") is None, reason="needs Go (Ollama's template engine is Go's text/template)")
def test_ollama_template_renders_like_our_chat_template(tokenizer, tmp_path):
    import os
    import subprocess

    from minimind.export.gguf import OLLAMA_TEMPLATE

    go_env = {**os.environ, "GOCACHE": str(tmp_path / "go-cache"), "GOPATH": str(tmp_path / "go-path"),
              "GOFLAGS": "", "GO111MODULE": "auto"}

    (tmp_path / "render.go").write_text(GO_RENDERER)
    (tmp_path / "template.tmpl").write_text(OLLAMA_TEMPLATE)
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b\nc"},
         {"role": "user", "content": "你好"}],
    ]
    for messages in conversations:
        # what Ollama passes: .System (the system prompt, if any) and .Messages (all of them)
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        data = {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
        (tmp_path / "data.json").write_text(json.dumps(data))
        rendered = subprocess.run(["go", "run", str(tmp_path / "render.go"), str(tmp_path / "template.tmpl"),
                                   str(tmp_path / "data.json")], capture_output=True, text=True, check=True,
                                  cwd=tmp_path, env=go_env).stdout
        assert rendered == tokenizer.apply_chat_template(messages, add_generation_prompt=True)
