"""Checkpoints: atomic writes, safetensors round trip, upstream .pth import, strict keys, unsafe pickles."""
import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open

from minimind.checkpoint import (
    load_model,
    load_upstream_pth,
    save_model,
)
from minimind.config import get_config
from minimind.files import atomic_save_bytes, atomic_write
from minimind.formats import RoutingNotInLayout, config_from_state_dict, layout_from_state_dict
from minimind.model import MiniMind


def build(name="tiny", seed=0, **overrides):
    torch.manual_seed(seed)
    model = MiniMind(get_config(name, **overrides)).eval()
    with torch.no_grad():  # norms away from 1 so a lost norm weight would show
        for key, param in model.named_parameters():
            if "norm" in key:
                param.uniform_(0.5, 1.5)
    return model


IDS = torch.randint(3, 256, (2, 10), generator=torch.Generator().manual_seed(5))


def upstream_state_dict(model):
    """What upstream's trainer saves: every key (tied weight twice), fp16."""
    return {k: v.detach().half().cpu() for k, v in model.state_dict().items()}


def test_atomic_write_replaces_the_file_only_when_writing_succeeds(tmp_path):
    target = tmp_path / "weights.bin"
    atomic_save_bytes(target, b"old")

    def failing_writer(temp):
        with open(temp, "wb") as f:
            f.write(b"half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing_writer)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["weights.bin"]  # the temporary file was removed
    atomic_save_bytes(target, b"new")
    assert target.read_bytes() == b"new"


@pytest.mark.parametrize("name", ["tiny", "tiny-moe"])
def test_save_and_load_round_trip_gives_identical_logits(tmp_path, name):
    model = build(name, qk_norm=(name == "tiny"))
    save_model(model, tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.config == model.config
    torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, atol=0, rtol=0)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_tied_embedding_is_stored_once(tmp_path):
    save_model(build(), tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys


def test_untied_model_round_trips_both_matrices(tmp_path):
    model = build(tie_word_embeddings=False)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)
    assert loaded.lm_head.weight is not loaded.model.embed_tokens.weight


def test_bf16_save_loads_back_as_float32_with_bf16_rounding(tmp_path):
    model = build()
    save_model(model, tmp_path, dtype=torch.bfloat16)
    loaded = load_model(tmp_path)
    assert loaded.model.norm.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.model.norm.weight, model.model.norm.weight.bfloat16().float())


def test_upstream_pth_loads_strictly_and_infers_its_config(tmp_path):
    model = build("minimind2-small", num_hidden_layers=2, vocab_size=300)
    path = tmp_path / "pretrain_512.pth"
    torch.save(upstream_state_dict(model), path)
    loaded = load_model(path)
    assert loaded.config == model.config  # hidden, layers, kv heads, FFN width all read from shapes
    reference = MiniMind(model.config).eval()
    reference.load_state_dict({k: v.float() for k, v in upstream_state_dict(model).items()})
    torch.testing.assert_close(loaded(IDS).logits, reference(IDS).logits, atol=0, rtol=0)


def test_upstream_moe_and_qk_norm_layouts_are_inferred_from_shapes():
    moe = build("tiny-moe", n_shared_experts=2)
    layout = layout_from_state_dict(moe.state_dict(), num_attention_heads=4)
    assert (layout["use_moe"], layout["n_routed_experts"], layout["n_shared_experts"]) == (True, 4, 2)
    v3 = build("tiny", qk_norm=True, num_attention_heads=8, num_key_value_heads=4)
    inferred = config_from_state_dict(v3.state_dict())
    assert (inferred.qk_norm, inferred.num_attention_heads, inferred.head_dim, inferred.num_key_value_heads) == (
        True, 8, 8, 4)


MINIMIND3_MOE_SMALL = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_moe_file_without_its_config_is_refused_naming_what_to_pass(tmp_path, suffix):
    """Its shapes say how many experts there are, not how tokens are routed: never guessed."""
    from safetensors.torch import save_file

    cases = {"minimind3-moe": build("minimind3-moe", **MINIMIND3_MOE_SMALL),
             "minimind2-moe": build("tiny-moe")}
    for preset, model in cases.items():
        path = tmp_path / f"{preset}{suffix}"
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        torch.save(upstream_state_dict(model), path) if suffix == ".pth" else save_file(state, str(path))
        with pytest.raises(ValueError) as error:
            load_model(path)
        message = str(error.value)
        assert message.startswith(f"{path}: a mixture-of-experts checkpoint") and "num_experts_per_tok" in message
        assert f"get_config({preset!r}, " in message and "hidden_size=64" in message
        assert load_model(path, config=model.config).config == model.config


def test_a_full_size_minimind3_moe_layout_is_pointed_at_its_preset():
    with torch.device("meta"):  # shapes only: 198M parameters need no memory here
        state = MiniMind(get_config("minimind3-moe")).state_dict()
    with pytest.raises(RoutingNotInLayout, match=r"--preset minimind3-moe \(num_experts_per_tok=1, "
                                                 r"norm_topk_prob=True, norm_top1_prob=True\)"):
        config_from_state_dict(state)


def test_minimind3_moe_pth_with_its_preset_routes_each_token_to_one_expert_at_weight_one(tmp_path):
    model = build("minimind3-moe", **MINIMIND3_MOE_SMALL)
    torch.save(upstream_state_dict(model), tmp_path / "full_sft_64_moe.pth")
    loaded = load_model(tmp_path / "full_sft_64_moe.pth", config=get_config("minimind3-moe", **MINIMIND3_MOE_SMALL))
    moe = loaded.model.layers[0].mlp
    assert len(moe.shared_experts) == 0
    hidden = loaded.model.embed_tokens(IDS)
    _, weights, index = moe.route(hidden)
    assert weights.shape[-1] == 1 and torch.equal(weights, torch.ones_like(weights))  # as upstream: p / p
    # the same file read as if it routed like the book's top-1 (weight = the probability) computes
    # something else: why the routing is never guessed
    raw = load_model(tmp_path / "full_sft_64_moe.pth", config=get_config("minimind3-moe", **MINIMIND3_MOE_SMALL,
                                                                          norm_top1_prob=False))
    assert (raw(IDS).logits - loaded(IDS).logits).abs().max() > 1e-3


def test_upstream_minimind3_transformers_folder_with_a_moe_config_loads_its_routing(tmp_path):
    from safetensors.torch import save_file

    model = build("minimind3-moe", **MINIMIND3_MOE_SMALL)
    upstream_config = {  # the fields minimind-3's MiniMindConfig writes
        "architectures": ["MiniMindForCausalLM"], "model_type": "minimind", "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256,
        "intermediate_size": 96, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "hidden_act": "silu", "use_moe": True, "num_experts": 4, "num_experts_per_tok": 1,
        "moe_intermediate_size": 96, "norm_topk_prob": True, "router_aux_loss_coef": 5e-4,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "flash_attn": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(upstream_config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              str(tmp_path / "model.safetensors"))
    loaded = load_model(tmp_path)
    routing = {k: getattr(loaded.config, k) for k in ("num_experts_per_tok", "n_shared_experts", "norm_topk_prob",
                                                      "norm_top1_prob", "aux_loss_alpha", "seq_aux")}
    assert routing == {"num_experts_per_tok": 1, "n_shared_experts": 0, "norm_topk_prob": True,
                       "norm_top1_prob": True, "aux_loss_alpha": 5e-4, "seq_aux": False}
    torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, atol=0, rtol=0)


def test_upstream_resume_file_and_ddp_prefixes_are_understood(tmp_path):
    model = build()
    state = {"module." + k: v for k, v in upstream_state_dict(model).items()}
    path = tmp_path / "pretrain_64_resume.pth"
    torch.save({"model": state, "epoch": 0, "step": 10}, path)
    loaded = load_upstream_pth(path, model.config)
    torch.testing.assert_close(loaded.model.norm.weight, model.model.norm.weight.half().float())


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _RunsCodeWhenUnpickled(marker)}, f, protocol=2)
    with pytest.raises(ValueError, match="evil.pth: refused to load"):
        load_model(path)
    assert not marker.exists()


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    model = build()
    state = upstream_state_dict(model)
    del state["model.layers.1.mlp.up_proj.weight"]
    state["model.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(2, 64)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_model(path, config=model.config)
    message = str(err.value)
    assert "broken.pth" in message
    assert "missing keys (1): ['model.layers.1.mlp.up_proj.weight']" in message
    assert "unexpected keys (1): ['model.layers.0.self_attn.q_proj.lora_A.weight']" in message


def test_moe_weights_do_not_load_into_a_dense_config(tmp_path):
    torch.save(upstream_state_dict(build("tiny-moe")), tmp_path / "moe.pth")
    with pytest.raises(ValueError, match=r"missing keys \(6\).*mlp.gate_proj"):
        load_model(tmp_path / "moe.pth", config=get_config("tiny"))


def test_wrong_shapes_are_reported_with_both_shapes(tmp_path):
    torch.save(upstream_state_dict(build()), tmp_path / "small.pth")
    with pytest.raises(ValueError, match=r"model.embed_tokens.weight: file \(256, 64\) vs model \(300, 64\)"):
        load_model(tmp_path / "small.pth", config=get_config("tiny", vocab_size=300))


def test_invalid_config_json_names_file_and_line(tmp_path):
    save_model(build(), tmp_path)
    (tmp_path / "config.json").write_text('{\n "hidden_size": 64,\n oops\n}')
    with pytest.raises(ValueError, match=r"config.json:3: invalid JSON"):
        load_model(tmp_path)


def test_upstream_transformers_folder_with_minimind_config_loads(tmp_path):
    """Upstream's own transformers export: model_type "minimind", its config fields, the same keys."""
    from safetensors.torch import save_file

    model = build("tiny-moe")
    upstream_config = {
        "architectures": ["MiniMindForCausalLM"], "model_type": "minimind", "hidden_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "flash_attn": True,
        "dropout": 0.0, "hidden_act": "silu", "use_moe": True, "num_experts_per_tok": 2,
        "n_routed_experts": 4, "n_shared_experts": 1, "scoring_func": "softmax", "aux_loss_alpha": 0.01,
        "seq_aux": True, "norm_topk_prob": True, "bos_token_id": 1, "eos_token_id": 2,
        "inference_rope_scaling": False, "rope_scaling": None, "torch_dtype": "float32",
    }
    (tmp_path / "config.json").write_text(json.dumps(upstream_config))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_model(tmp_path)
    torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, atol=0, rtol=0)


# ----------------------------------------------------------------------------- untrusted files

def _edit_config(directory, **changes):
    values = json.loads((directory / "config.json").read_text())
    values.update(changes)
    (directory / "config.json").write_text(json.dumps(values, indent=2))  # json writes NaN as NaN


@pytest.mark.parametrize("changes, message", [
    ({"hidden_size": "128"}, r"hidden_size must be an integer, got '128'"),
    ({"num_key_value_heads": 0}, r"num_key_value_heads must be at least 1, got 0"),
    ({"rope_theta": [1]}, r"rope_theta must be a finite number > 0, got \[1\]"),
    ({"rms_norm_eps": float("nan")}, r"rms_norm_eps must be a finite number > 0, got nan"),
    ({"tie_word_embeddings": "yes"}, r"tie_word_embeddings must be true or false, got 'yes'"),
    ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
])
def test_config_json_values_are_checked_and_named_with_their_line(tmp_path, changes, message):
    save_model(build(), tmp_path)
    _edit_config(tmp_path, **changes)
    field = next(iter(changes))
    line = next(number for number, text in enumerate((tmp_path / "config.json").read_text().splitlines(), 1)
                if f'"{field}"' in text)
    with pytest.raises(ValueError, match=rf"config.json:{line}: {message}"):
        load_model(tmp_path)


def test_a_config_bigger_than_its_weights_is_refused_before_the_model_is_allocated(tmp_path, monkeypatch):
    import minimind.checkpoint as checkpoint

    save_model(build(), tmp_path)
    _edit_config(tmp_path, num_hidden_layers=10_000_000)
    monkeypatch.setattr(checkpoint, "MiniMind", lambda config: pytest.fail("allocated a model for an unchecked config"))
    described = get_config("tiny", num_hidden_layers=10_000_000).num_parameters()
    with pytest.raises(ValueError, match=rf"config.json describes {described:,} parameters but the weights "
                                         rf"\(.*model.safetensors\) hold 115,008"):
        load_model(tmp_path)


def test_unreadable_weights_name_the_file(tmp_path):
    save_model(build(), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "ckpt")
    (tmp_path / "text.pth").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ValueError, match=r"text.pth: not a PyTorch checkpoint"):
        load_model(tmp_path / "text.pth")
    torch.save(upstream_state_dict(build()), tmp_path / "cut.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut.pth: not a PyTorch checkpoint"):
        load_model(tmp_path / "cut.pth")
