"""Exported folders load in transformers as Llama / Qwen3 / Qwen3-MoE / GraniteMoeShared and give our logits."""
import pytest
import torch

from minimind.checkpoint import load_model
from minimind.config import get_config
from minimind.export.transformers import export_transformers
from minimind.formats import to_transformers_model
from minimind.model import MiniMind

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4  # fp32
MINIMIND3_SMALL = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=96, max_position_embeddings=256)
CASES = {
    "llama": ("tiny", {}, "LlamaForCausalLM"),
    "llama-untied": ("tiny", {"tie_word_embeddings": False}, "LlamaForCausalLM"),
    "llama-yarn": ("tiny", {"rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 64,
                                             "beta_fast": 32, "beta_slow": 1, "attention_factor": 1.0}},
                   "LlamaForCausalLM"),
    "qwen3": ("tiny", {"qk_norm": True, "rms_norm_eps": 1e-6}, "Qwen3ForCausalLM"),
    "moe": ("tiny-moe", {}, "GraniteMoeSharedForCausalLM"),
    "moe-top3-two-shared": ("tiny-moe", {"num_experts_per_tok": 3, "n_shared_experts": 2},
                            "GraniteMoeSharedForCausalLM"),
    "moe-top1-renormalised": ("tiny-moe", {"num_experts_per_tok": 1, "norm_top1_prob": True},
                              "GraniteMoeSharedForCausalLM"),
    "minimind3": ("minimind3", dict(MINIMIND3_SMALL), "Qwen3ForCausalLM"),
    # minimind-3's MoE (top-1, its weight renormalised to 1, no shared expert), then k = 2, then a
    # top-1 router whose weight stays the probability (Qwen3-MoE's norm_topk_prob=False)
    "minimind3-moe": ("minimind3-moe", dict(MINIMIND3_SMALL), "Qwen3MoeForCausalLM"),
    "qwen3-moe-top2": ("minimind3-moe", dict(MINIMIND3_SMALL, num_experts_per_tok=2, norm_top1_prob=False),
                       "Qwen3MoeForCausalLM"),
    "qwen3-moe-top1-unnormalised": ("minimind3-moe", dict(MINIMIND3_SMALL, norm_topk_prob=False, norm_top1_prob=False),
                                    "Qwen3MoeForCausalLM"),
}


def build(name, **overrides):
    torch.manual_seed(0)
    model = MiniMind(get_config(name, **overrides)).eval()
    with torch.no_grad():  # norms away from 1 so a dropped norm weight would show
        for key, param in model.named_parameters():
            if "norm" in key:
                param.uniform_(0.5, 1.5)
    return model


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    name, overrides, architecture = CASES[request.param]
    model = build(name, **overrides)
    out_dir = export_transformers(model, tmp_path_factory.mktemp(request.param))
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    assert type(hf_model).__name__ == architecture
    return model, hf_model, out_dir


IDS = torch.randint(3, 256, (2, 24), generator=torch.Generator().manual_seed(7))


@torch.no_grad()
def test_exported_model_gives_the_same_logits(exported):
    model, hf_model, _ = exported
    assert max_diff(hf_model(IDS).logits, model(IDS).logits) < TOLERANCE


@torch.no_grad()
def test_exported_model_gives_the_same_logits_with_incremental_cache(exported):
    model, hf_model, _ = exported
    reference = model(IDS).logits
    out = hf_model(IDS[:, :10], use_cache=True)
    steps = [out.logits]
    for t in range(10, IDS.size(1)):
        out = hf_model(IDS[:, t : t + 1], cache=out.cache, use_cache=True)  # transformers 5.24 names
        steps.append(out.logits)
    assert max_diff(torch.cat(steps, dim=1), reference) < TOLERANCE
    # and our own cache against transformers' cache, step for step
    ours = model(IDS[:, :10], use_cache=True)
    for t in range(10, IDS.size(1)):
        ours = model(IDS[:, t : t + 1], cache=ours.cache, use_cache=True)
    assert max_diff(ours.logits[:, -1], steps[-1][:, -1]) < TOLERANCE


@torch.no_grad()
def test_left_padded_batch_matches_transformers_given_the_same_positions(exported):
    model, hf_model, _ = exported
    mask = torch.ones_like(IDS)
    mask[0, :6] = 0
    padded = IDS.clone()
    padded[0, :6] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    ours = model(padded, attention_mask=mask).logits
    theirs = hf_model(padded, attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    assert max_diff(ours[real], theirs[real]) < TOLERANCE


@torch.no_grad()
def test_transformers_greedy_generate_equals_our_cached_greedy_loop(exported):
    model, hf_model, _ = exported
    prompt = IDS[:1, :8]
    hf_tokens = hf_model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None,
                                  pad_token_id=0)[0, 8:]
    out = model(prompt, use_cache=True)
    tokens = []
    for _ in range(12):
        next_token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(next_token)
        out = model(next_token, cache=out.cache, use_cache=True)
    assert torch.equal(torch.cat(tokens, dim=1)[0], hf_tokens)


@torch.no_grad()
def test_exported_folder_loads_back_with_load_model(exported):
    model, _, out_dir = exported
    loaded = load_model(out_dir)
    assert loaded.config.to_dict() == {**model.config.to_dict(), "dropout": 0.0}
    assert max_diff(loaded(IDS).logits, model(IDS).logits) == 0.0


def test_moe_that_transformers_cannot_represent_is_a_clear_error():
    with pytest.raises(ValueError, match="norm_topk_prob"):
        to_transformers_model(build("tiny-moe", num_experts_per_tok=1))
    with pytest.raises(ValueError, match="q/k-norm"):
        to_transformers_model(build("tiny-moe", qk_norm=True))


def test_export_writes_the_tokenizer_that_transformers_loads(tmp_path):
    from minimind.tokenizer import train_tokenizer

    texts = ["Pelum lives in Varo. Pelum is 34 years old.", "佩伦住在瓦罗。", "2 + 3 = 5"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=300)
    export_transformers(build("tiny"), tmp_path, tokenizer=tokenizer)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tokenizer("Pelum lives in Varo.")["input_ids"] == tokenizer.encode("Pelum lives in Varo.")
