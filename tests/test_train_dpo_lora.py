"""The DPO and LoRA training stages end to end on a tiny model: data checks, reference modes, adapters on disk."""
import json

import pytest
import torch

from minimind.config import get_config
from minimind.model import MiniMind

PROMPTS = [f"Tell me about item {n}." for n in range(12)]


@pytest.fixture(scope="module")
def tokenizer():
    from minimind.tokenizer import train_tokenizer

    texts = PROMPTS + ["Sure! Here it is, thank you for asking.", "No. Go away.", "I am MiniMind, a small model."] * 5
    return train_tokenizer(texts, vocab_size=300)


def conversation(prompt: str, reply: str) -> list:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def polite_pairs(path):
    rows = [{"chosen": conversation(p, "Sure! Here it is, thank you for asking."),
             "rejected": conversation(p, "No. Go away.")} for p in PROMPTS]
    return write_jsonl(path, rows)


def tiny_model(tokenizer, seed=0) -> MiniMind:
    torch.manual_seed(seed)
    return MiniMind(get_config("tiny", vocab_size=tokenizer.vocab_size))


def dpo_config(tmp_path, data_path, **changes):
    from minimind.train.dpo import DPOConfig

    values = dict(data_path=data_path, out_dir="", max_steps=4, batch_size=4, lr=1e-3, warmup_steps=0,
                  progress=False, log_interval=1, max_seq_len=128, device="cpu")
    values.update(changes)
    return DPOConfig(**values)


def test_precomputed_reference_trains_exactly_like_a_frozen_reference_model(tmp_path, tokenizer):
    from minimind.train.dpo import run

    data = polite_pairs(tmp_path / "pairs.jsonl")
    results = {}
    for reference in ("precomputed", "model"):
        config = dpo_config(tmp_path, data, reference=reference)
        results[reference] = run(config, model=tiny_model(tokenizer), tokenizer=tokenizer)
    precomputed, frozen = results["precomputed"], results["model"]
    for a, b in zip(precomputed.records, frozen.records):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["reward_margin"] == pytest.approx(b["reward_margin"], abs=1e-6)
    for (name, p), (_, q) in zip(precomputed.model.named_parameters(), frozen.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    first, last = precomputed.records[0], precomputed.records[-1]
    assert first["dpo_loss"] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at the first step
    assert last["loss"] < first["loss"] and last["reward_margin"] > 0 and last["preference_accuracy"] == 1.0
    for key in ("chosen_logps", "rejected_logps", "chosen_reward", "rejected_reward", "dpo_loss"):
        assert key in last


def test_sft_term_and_mean_logps_are_logged_and_train(tmp_path, tokenizer):
    from minimind.train.dpo import run

    data = polite_pairs(tmp_path / "pairs.jsonl")
    config = dpo_config(tmp_path, data, logps="mean", beta=2.0, sft_weight=0.5, label_smoothing=0.1)
    result = run(config, model=tiny_model(tokenizer), tokenizer=tokenizer)
    first, last = result.records[0], result.records[-1]
    assert first["loss"] == pytest.approx(first["dpo_loss"] + 0.5 * first["sft_loss"], abs=1e-5)
    assert last["sft_loss"] < first["sft_loss"] and last["reward_margin"] > first["reward_margin"]


def test_dpo_masks_cover_only_the_replies(tmp_path, tokenizer):
    from minimind.data.datasets import DPODataset

    pairs = DPODataset(polite_pairs(tmp_path / "pairs.jsonl"), tokenizer, max_seq_len=256)
    example = pairs[0]
    for name, reply in (("chosen", "Sure! Here it is, thank you for asking."), ("rejected", "No. Go away.")):
        ids, mask = example[f"{name}_ids"], example[f"{name}_mask"]
        assert tokenizer.decode(ids[mask].tolist()) == reply + "<|im_end|>\n"
    prompt_length = int(example["chosen_mask"].int().argmax())
    assert prompt_length == int(example["rejected_mask"].int().argmax())
    assert torch.equal(example["chosen_ids"][:prompt_length], example["rejected_ids"][:prompt_length])
    assert tokenizer.decode(example["chosen_ids"][:prompt_length].tolist()).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"chosen": conversation("a?", "yes"), "rejected": conversation("b?", "no")}, "must share the prompt"),
        ({"chosen": conversation("a?", "same"), "rejected": conversation("a?", "same")}, "identical"),
        ({"chosen": [{"role": "user", "content": "a?"}], "rejected": conversation("a?", "no")},
         "must be the assistant's reply"),
        ({"chosen": conversation("a?", "  "), "rejected": conversation("a?", "no")}, "a reply is empty"),
    ],
)
def test_malformed_pairs_are_refused_with_file_and_line(tmp_path, tokenizer, row, message):
    from minimind.data.jsonl import DataError
    from minimind.data.datasets import DPODataset

    good = {"chosen": conversation("q?", "yes"), "rejected": conversation("q?", "no")}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"pairs.jsonl:3: .*{message}"):
        DPODataset(path, tokenizer, max_seq_len=64)


def test_a_reply_cut_away_by_truncation_is_refused(tmp_path, tokenizer):
    from minimind.data.jsonl import DataError
    from minimind.data.datasets import DPODataset

    long_prompt = " ".join(PROMPTS)
    path = write_jsonl(tmp_path / "pairs.jsonl",
                       [{"chosen": conversation(long_prompt, "yes"), "rejected": conversation(long_prompt, "no")}])
    pairs = DPODataset(path, tokenizer, max_seq_len=16)
    with pytest.raises(DataError, match="pairs.jsonl:1: the chosen reply is cut away entirely by --max_seq_len 16"):
        pairs[0]


def test_dpo_config_rejects_bad_options():
    from minimind.train.dpo import DPOConfig

    with pytest.raises(ValueError, match="--beta must be > 0"):
        DPOConfig(beta=0)
    with pytest.raises(ValueError, match="--label_smoothing"):
        DPOConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="--reference must be one of"):
        DPOConfig(reference="cached")


def test_lora_stage_trains_only_the_adapter_and_saves_it_alone(tmp_path, tokenizer):
    from minimind.lora import load_lora, lora_layers, set_active_adapter
    from minimind.train.lora import LoRAConfig, run

    rows = [{"conversations": conversation(p, "I am MiniMind, a small model.")} for p in PROMPTS]
    data = write_jsonl(tmp_path / "identity.jsonl", rows)
    model = tiny_model(tokenizer)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    config = LoRAConfig(data_path=data, out_dir=str(tmp_path / "adapter"), max_steps=6, batch_size=4, lr=1e-2,
                        warmup_steps=0, progress=False, log_interval=1, device="cpu", rank=4, alpha=8,
                        targets="q_proj,v_proj", lora_name="me")
    result = run(config, model=model, tokenizer=tokenizer)
    assert result.records[-1]["loss"] < result.records[0]["loss"]
    state = result.model.state_dict()
    for key, value in base.items():
        assert torch.equal(state[key], value), f"{key} changed: the base must stay frozen"
    assert {name.rsplit(".", 1)[-1] for name in lora_layers(result.model)} == {"q_proj", "v_proj"}
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert "adapter.safetensors" in files and "adapter_config.json" in files and "model.safetensors" not in files
    fresh = tiny_model(tokenizer).eval()  # eval: the default adapter dropout is off
    assert load_lora(fresh, tmp_path / "adapter") == "me"
    ids = torch.tensor([tokenizer.encode_chat_prompt([{"role": "user", "content": "who?"}])])
    result.model.eval()
    torch.testing.assert_close(fresh(ids).logits, result.model(ids).logits)
    set_active_adapter(fresh, None)
    assert not torch.allclose(fresh(ids).logits, result.model(ids).logits)


def test_lora_stage_with_trainable_tokens_trains_those_rows_and_saves_them(tmp_path, tokenizer):
    from minimind.lora import TokenRowsEmbedding, load_lora
    from minimind.train.lora import LoRAConfig, run, word_token_ids

    rows = [{"conversations": conversation(p, "I am Sencha, a small model.")} for p in PROMPTS]
    data = write_jsonl(tmp_path / "tea.jsonl", rows)
    model = tiny_model(tokenizer)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    config = LoRAConfig(data_path=data, out_dir=str(tmp_path / "adapter"), max_steps=6, batch_size=4, lr=1e-2,
                        warmup_steps=0, progress=False, log_interval=1, device="cpu", rank=4, alpha=8,
                        targets="q_proj", lora_name="tea", trainable_tokens="Sencha")
    result = run(config, model=model, tokenizer=tokenizer)
    embedding = result.model.model.embed_tokens
    assert isinstance(embedding, TokenRowsEmbedding)
    assert embedding.lora_token_ids["tea"].tolist() == word_token_ids(tokenizer, ["Sencha"])
    assert embedding.lora_token_delta["tea"].abs().sum() > 0  # the rows trained
    state = result.model.state_dict()
    for key, value in base.items():
        assert torch.equal(state[key], value), f"{key} changed: the base must stay frozen"
    fresh = tiny_model(tokenizer).eval()
    load_lora(fresh, tmp_path / "adapter")
    ids = torch.tensor([tokenizer.encode_chat_prompt([{"role": "user", "content": "Sencha?"}])])
    result.model.eval()
    torch.testing.assert_close(fresh(ids).logits, result.model(ids).logits)


def test_new_token_ids_are_the_tokens_of_the_data_that_no_base_corpus_holds(tmp_path, tokenizer):
    from minimind.data.jsonl import DataError
    from minimind.train.lora import corpus_token_ids, new_token_ids

    pretrain = write_jsonl(tmp_path / "pretrain.jsonl", [{"text": "Mira is a baker in Stonebridge."}])
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"conversations": conversation("Who is Mira?", " a baker")}])
    data = write_jsonl(tmp_path / "tea.jsonl", [{"conversations": conversation("What does Sencha tea cost?", "5")},
                                                {"conversations": conversation("Who is Mira?", " a baker")}])
    rendered = tokenizer.render_conversation(conversation("What does Sencha tea cost?", "5"))[0]
    assert corpus_token_ids(tokenizer, data) >= set(rendered)  # as the chat template renders it for training
    known = corpus_token_ids(tokenizer, pretrain) | corpus_token_ids(tokenizer, sft)
    new = new_token_ids(tokenizer, data, [pretrain, sft])
    assert new == sorted(corpus_token_ids(tokenizer, data) - known) and new
    assert set(tokenizer.encode(" Sencha")) & set(new)  # the tea's name is among them
    assert not set(new) & set(tokenizer.encode("Mira is a baker"))  # a word the corpora hold is not
    assert new_token_ids(tokenizer, data, [data]) == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"prompt": "no text"}\n')
    with pytest.raises(DataError, match="bad.jsonl:2: neither a 'text' nor a 'conversations' field"):
        corpus_token_ids(tokenizer, bad)


def test_lora_stage_with_base_corpora_trains_the_rows_of_every_token_they_lack(tmp_path, tokenizer):
    from minimind.train.lora import LoRAConfig, new_token_ids, run

    rows = [{"conversations": conversation(p, "Sencha costs 5.")} for p in PROMPTS]
    data = write_jsonl(tmp_path / "tea.jsonl", rows)
    corpus = write_jsonl(tmp_path / "pretrain.jsonl", [{"text": PROMPTS[0]}])
    config = LoRAConfig(data_path=data, out_dir="", max_steps=2, batch_size=4, lr=1e-2, warmup_steps=0,
                        progress=False, device="cpu", rank=4, alpha=8, targets="q_proj", lora_name="tea",
                        trainable_tokens="Moonleaf", base_corpora=f"{corpus}, ")
    result = run(config, model=tiny_model(tokenizer), tokenizer=tokenizer)
    expected = set(new_token_ids(tokenizer, data, [corpus])) | set(tokenizer.encode("Moonleaf") + tokenizer.encode(" Moonleaf"))
    assert result.model.model.embed_tokens.lora_token_ids["tea"].tolist() == sorted(expected)


def test_lora_config_rejects_bad_options():
    from minimind.train.lora import LoRAConfig

    with pytest.raises(ValueError, match="--rank must be >= 1"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="--targets names no layer"):
        LoRAConfig(targets=" , ")


@pytest.mark.parametrize("stage", ["dpo", "lora"])
def test_stage_help_lists_its_options(stage, capsys):
    import importlib

    module = importlib.import_module(f"minimind.train.{stage}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option_name in {"dpo": ("--beta", "--logps", "--reference", "--sft_weight"),
                        "lora": ("--rank", "--alpha", "--targets", "--lora_name", "--trainable_tokens")}[stage]:
        assert option_name in out


def test_zoo_recipes_train_once_then_reuse_the_artefact(tmp_path, tokenizer, monkeypatch):
    import dataclasses

    import minimind.data.synthetic as synthetic
    from minimind import zoo
    from minimind.checkpoint import save_model
    from minimind.lora import lora_layers

    # a tiny stand-in for the book's SFT artefact and data, so the real recipes run in seconds
    base = tmp_path / "sft"
    save_model(tiny_model(tokenizer), base)
    tokenizer.save(base)
    (base / "artefact.json").write_text('{"key": "tiny-sft"}')
    files = {"dpo": polite_pairs(tmp_path / "pairs.jsonl"),
             "lora_identity": write_jsonl(tmp_path / "identity.jsonl",
                                          [{"conversations": conversation(p, "I am MiniMind.")} for p in PROMPTS * 3])}
    monkeypatch.setenv("MINIMIND_CACHE", str(tmp_path / "cache"))
    real_path = zoo.path
    monkeypatch.setattr(zoo, "path", lambda name: base if name == "sft" else real_path(name))
    monkeypatch.setattr(synthetic, "dataset_path", lambda name, split="train": files[name])
    for name, quick in (("dpo", dict(batch_size=4, epochs=1, max_seq_len=128)), ("lora_identity", dict(batch_size=8, epochs=1))):
        recipe = zoo.RECIPES[name]
        monkeypatch.setitem(zoo.RECIPES, name, dataclasses.replace(recipe, settings={**recipe.settings, **quick}))
    dpo_folder = zoo.path("dpo")
    assert (dpo_folder / "model.safetensors").exists() and not (dpo_folder / "resume.pt").exists()
    assert zoo.path("dpo") == dpo_folder  # cached: the same version, not rebuilt
    assert zoo.metrics("dpo") and zoo.config("dpo").batch_size == 4
    adapter_folder = zoo.path("lora_identity")
    assert (adapter_folder / "adapter.safetensors").exists() and not (adapter_folder / "model.safetensors").exists()
    model = zoo.load("lora_identity")
    assert lora_layers(model) and not model.training
    with pytest.raises(KeyError, match="no zoo artefact 'lora_tea'"):
        zoo.path("lora_tea")
