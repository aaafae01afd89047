"""`minimind export`: the transformers folder loads with AutoModelForCausalLM + AutoTokenizer (no
custom code) and its greedy generation equals ours token for token; GGUF from the command line;
a LoRA adapter merged into the export."""
import numpy as np
import pytest
import torch

from minimind.export.__main__ import main
from minimind.generate import generate
from minimind.tokenizer import EOS_ID
from inference_helpers import save_tiny_checkpoint, tiny_model

MESSAGES = [{"role": "user", "content": "Who are you?"}]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("to_export")
    model, tokenizer = save_tiny_checkpoint(directory, std=0.15)
    return directory, model, tokenizer


def test_transformers_export_generates_exactly_like_ours(checkpoint, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, model, tokenizer = checkpoint
    assert main(["transformers", "--model", str(directory), "--out", str(tmp_path / "hf")]) == 0
    assert "wrote" in capsys.readouterr().out
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    prompt = tokenizer.encode_chat_prompt(MESSAGES)
    rendered = hf_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(rendered) == prompt
    for question in ("Who are you?", "佩伦住在哪里？", "What is 17 + 25?"):
        prompt = tokenizer.encode_chat_prompt([{"role": "user", "content": question}])
        ours = generate(model, prompt, max_new_tokens=40)
        with torch.no_grad():
            theirs = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                       do_sample=False, max_new_tokens=40, eos_token_id=EOS_ID,
                                       pad_token_id=0)[0, len(prompt):].tolist()
        if theirs and theirs[-1] == EOS_ID:
            theirs = theirs[:-1]  # transformers keeps the stop token, we do not
        assert ours == theirs
        assert hf_tokenizer.decode(theirs) == tokenizer.decode(ours)


def test_transformers_batched_generation_matches_ours(checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM

    from minimind.generate import generate_batch

    directory, model, tokenizer = checkpoint
    main(["transformers", "--model", str(directory), "--out", str(tmp_path / "hf")])
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    prompts = [tokenizer.encode_chat_prompt([{"role": "user", "content": q}]) for q in ("Hi", "Who lives in Varo?")]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf_model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12, eos_token_id=EOS_ID,
                                pad_token_id=0)[:, width:].tolist()
    theirs = [row[: row.index(EOS_ID)] if EOS_ID in row else row for row in out]
    assert generate_batch(model, prompts, max_new_tokens=12) == theirs


def test_gguf_export_from_the_command_line(checkpoint, tmp_path):
    from gguf import GGUFReader

    directory, model, _ = checkpoint
    assert main(["gguf", "--model", str(directory), "--out", str(tmp_path / "m.gguf"), "--dtype", "f16"]) == 0
    reader = GGUFReader(tmp_path / "m.gguf")
    assert reader.get_field("general.name").contents() == "MiniMind"
    assert reader.get_field("general.file_type").contents() == 1
    assert (tmp_path / "Modelfile").exists()


def test_lora_adapter_is_merged_into_the_export(checkpoint, tmp_path):
    from gguf import GGUFReader

    from minimind.lora import apply_lora, merge_lora, save_lora

    directory, _, tokenizer = checkpoint
    adapted = tiny_model(tokenizer.vocab_size, std=0.15)
    apply_lora(adapted, rank=4, alpha=8, targets=("down_proj",))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_lora(adapted, tmp_path / "adapter")
    merge_lora(adapted)
    assert main(["gguf", "--model", str(directory), "--lora", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged.gguf")]) == 0
    tensors = {t.name: np.array(t.data) for t in GGUFReader(tmp_path / "merged.gguf").tensors}
    expected = adapted.model.layers[0].mlp.down_proj.weight.detach().numpy()
    assert np.allclose(tensors["blk.0.ffn_down.weight"], expected, atol=1e-6)


def test_export_errors_are_reported(tmp_path, capsys):
    assert main(["gguf", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["onnx", "--out", "x"])
