"""Chat: loading checkpoints (with LoRA), splitting reasoning from the answer while streaming,
history trimming, and the `minimind chat` command line in one-shot and interactive modes."""
import builtins
from pathlib import Path

import pytest
import torch

from minimind.chat import main
from minimind.inference import ThinkingSplitter, fit_history, load_chat_model, plan_reply, stream_reply
from minimind.generate import SamplingParams, generate
from inference_helpers import ScriptedModel, save_tiny_checkpoint, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_chat")
    model, tokenizer = save_tiny_checkpoint(directory)
    return directory, model, tokenizer


def split_all(text: str, thinking: bool, stop=(), chunk: int = 1):
    """Feed `text` in chunks of `chunk` characters; collect the (channel, text) events joined per channel."""
    splitter = ThinkingSplitter(thinking, stop)
    events = []
    for start in range(0, len(text), chunk):
        events += splitter.feed(text[start:start + chunk])
    events += splitter.flush()
    joined = {"reasoning": "", "content": ""}
    for channel, piece in events:
        joined[channel] += piece
    return joined, splitter


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_splitter_routes_think_text_to_reasoning_whatever_the_chunking(chunk):
    reply = "Let me add: 7+5=12.\n</think>\n\n<answer>12</answer>\n"
    joined, _ = split_all(reply, thinking=True, chunk=chunk)
    assert joined == {"reasoning": "Let me add: 7+5=12.", "content": "12"}  # the answer without its tags


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_splitter_notices_a_think_block_the_model_opens_itself(chunk):
    joined, _ = split_all("<think>\nhmm, two\n</think>\n\nTwo.", thinking=False, chunk=chunk)
    assert joined == {"reasoning": "hmm, two", "content": "Two."}


def test_splitter_keeps_inner_whitespace_and_text_that_only_looks_like_a_tag():
    joined, _ = split_all("a <b> c\n\n  d </thin", thinking=False)
    assert joined["content"] == "a <b> c\n\n  d </thin" and joined["reasoning"] == ""


@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_splitter_stops_at_a_stop_string_and_drops_it(chunk):
    joined, splitter = split_all("one, two, STOP three", thinking=False, stop=["STOP", "never"], chunk=chunk)
    assert joined["content"] == "one, two," and splitter.stopped


def test_stop_strings_do_not_apply_inside_reasoning():
    joined, splitter = split_all("x STOP y</think>answer STOP z", thinking=True, stop=["STOP"])
    assert joined == {"reasoning": "x STOP y", "content": "answer"} and splitter.stopped


def test_reply_text_equals_decoded_greedy_tokens(checkpoint):
    _, model, tokenizer = checkpoint
    messages = [{"role": "user", "content": "Who are you?"}]
    params = SamplingParams(max_new_tokens=30)
    reply = stream_reply(model, tokenizer, messages, params)
    events = list(reply)
    tokens = generate(model, tokenizer.encode_chat_prompt(messages), params)
    expected = tokenizer.decode(tokens).strip()
    assert "".join(text for _, text in events) == reply.content
    # thinking-tag text (if the random model emits any) is routed to reasoning; without tags all is content
    if "<think>" not in expected and "</think>" not in expected:
        assert reply.content == expected
    assert reply.prompt_tokens == len(tokenizer.encode_chat_prompt(messages))
    assert reply.completion_tokens == len(tokens) + (reply.finish_reason == "stop")
    assert reply.finish_reason in ("stop", "length") and reply.tokens_per_second > 0


def test_thinking_prompt_starts_in_reasoning(checkpoint):
    _, model, tokenizer = checkpoint
    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    reply = stream_reply(model, tokenizer, messages, SamplingParams(max_new_tokens=12), enable_thinking=True)
    channels = [channel for channel, _ in reply]
    assert channels and channels[0] == "reasoning"
    prompt = tokenizer.decode(tokenizer.encode_chat_prompt(messages, enable_thinking=True))
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")


def test_thinking_budget_closes_reasoning(checkpoint):
    _, model, tokenizer = checkpoint
    params = SamplingParams.for_tokenizer(tokenizer, max_new_tokens=20, thinking_budget=4)
    tokens = generate(model, tokenizer.encode_chat_prompt([{"role": "user", "content": "Hi"}], enable_thinking=True),
                      params)
    think_end = tokenizer.token_to_id("</think>")
    assert think_end in tokens[:5]


def test_load_chat_model_reads_weights_and_tokenizer(checkpoint):
    directory, model, tokenizer = checkpoint
    loaded, loaded_tokenizer = load_chat_model(directory, device="cpu")
    ids = torch.tensor([tokenizer.encode("Pelum lives in Varo.")])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded_tokenizer.encode("佩伦住在瓦罗") == tokenizer.encode("佩伦住在瓦罗")
    assert next(loaded.parameters()).dtype == torch.float32  # fp32 on the CPU, never fp16


def test_load_chat_model_applies_a_lora_adapter(checkpoint, tmp_path):
    from minimind.lora import apply_lora, save_lora

    directory, model, tokenizer = checkpoint
    adapted = tiny_model(tokenizer.vocab_size)
    apply_lora(adapted, rank=4, alpha=8)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_lora(adapted, tmp_path / "adapter")
    loaded, _ = load_chat_model(directory, lora=[tmp_path / "adapter"], device="cpu")
    ids = torch.tensor([tokenizer.encode("Who are you?")])
    with torch.no_grad():
        # merged weights W + (α/r)·B·A round differently from the two products summed: 1e-4, not 1e-5
        assert torch.allclose(loaded(ids).logits, adapted(ids).logits, atol=1e-4)
        assert not torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-3)


def test_load_chat_model_refuses_a_tokenizer_larger_than_the_model(checkpoint, tmp_path):
    directory, _, _ = checkpoint
    tiny_tokenizer(vocab_size=500).save(tmp_path / "big")
    with pytest.raises(ValueError, match="tokenizer"):
        load_chat_model(directory, tokenizer=tmp_path / "big", device="cpu")
    with pytest.raises(FileNotFoundError):
        load_chat_model(tmp_path / "missing", device="cpu")


def test_fit_history_drops_oldest_turns_but_keeps_system(checkpoint):
    _, _, tokenizer = checkpoint
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(6):
        messages += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    messages.append({"role": "user", "content": "last question"})
    full = len(tokenizer.encode_chat_prompt(messages))
    context = full - 10 + 16  # too small for the whole conversation
    fitted = fit_history(messages, tokenizer, context=context, max_new_tokens=16)
    assert fitted[0] == messages[0] and fitted[-1] == messages[-1] and fitted[1]["role"] == "user"
    assert len(fitted) < len(messages)
    assert len(tokenizer.encode_chat_prompt(fitted)) + 16 <= context
    with pytest.raises(ValueError, match="context"):
        fit_history(messages, tokenizer, context=20, max_new_tokens=16)


def test_cli_prompt_mode_prints_the_greedy_reply(checkpoint, capsys):
    directory, model, tokenizer = checkpoint
    code = main(["--model", str(directory), "--device", "cpu", "--temperature", "0", "--max-new-tokens", "15",
                 "--prompt", "Who are you?"])
    out, err = capsys.readouterr()
    assert code == 0
    reply = stream_reply(model, tokenizer, [{"role": "user", "content": "Who are you?"}], SamplingParams(max_new_tokens=15))
    list(reply)
    assert out.strip().endswith(reply.content) and "tokens/s" in err and "float32" in err


def test_cli_keeps_the_conversation_between_prompts(checkpoint, capsys, monkeypatch):
    directory, _, _ = checkpoint
    seen = []
    import minimind.chat as chat_module

    original = chat_module.stream_reply

    def recording(model, tokenizer, messages, *args, **kwargs):
        seen.append([dict(m) for m in messages])
        return original(model, tokenizer, messages, *args, **kwargs)

    monkeypatch.setattr(chat_module, "stream_reply", recording)
    assert main(["--model", str(directory), "--device", "cpu", "--max-new-tokens", "5", "--seed", "1",
                 "--system", "Be brief.", "--prompt", "first", "--prompt", "second"]) == 0
    assert [m["role"] for m in seen[1]] == ["system", "user", "assistant", "user"]
    assert seen[1][1]["content"] == "first" and seen[1][3]["content"] == "second"


class FakeReply:
    """Stands in for stream_reply's ReplyStream: the reply is the prompt in capitals."""

    def __init__(self, content):
        self.content, self.completion_tokens, self.tokens_per_second, self.finish_reason = content, 1, 1.0, "stop"

    def __iter__(self):
        yield "content", self.content

    def close(self):
        pass


@pytest.mark.parametrize("history, expected", [
    ("0", [["s", "a"], ["s", "b"], ["s", "c"]]),
    ("1", [["s", "a"], ["s", "A", "b"], ["s", "B", "c"]]),
    ("2", [["s", "a"], ["s", "a", "A", "b"], ["s", "b", "B", "c"]]),
    (None, [["s", "a"], ["s", "a", "A", "b"], ["s", "a", "A", "b", "B", "c"]]),
])
def test_cli_history_keeps_the_system_prompt_and_the_last_n_earlier_messages(checkpoint, capsys, monkeypatch,
                                                                               history, expected):
    directory, _, _ = checkpoint
    seen = []
    import minimind.chat as chat_module

    def canned(model, tokenizer, messages, *args, **kwargs):
        seen.append([m["content"] for m in messages])
        return FakeReply(messages[-1]["content"].upper())

    monkeypatch.setattr(chat_module, "stream_reply", canned)
    argv = ["--model", str(directory), "--device", "cpu", "--system", "s", "--prompt", "a", "--prompt", "b",
            "--prompt", "c"]
    assert main(argv + (["--history", history] if history is not None else [])) == 0
    assert seen == expected


@pytest.mark.parametrize("value", ["-1", "two"])
def test_cli_rejects_a_negative_or_non_numeric_history(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--history", value, "--prompt", "hi"])
    assert exit_info.value.code == 2
    assert "--history" in capsys.readouterr().err


def test_cli_interactive_commands(checkpoint, capsys, monkeypatch):
    directory, _, _ = checkpoint
    lines = iter(["hello", "/think on", "what is 2+2?", "/reset", "/help", "bye", "/exit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    assert main(["--model", str(directory), "--device", "cpu", "--max-new-tokens", "4", "--temperature", "0"]) == 0
    err = capsys.readouterr().err
    assert "(thinking on)" in err and "(conversation cleared)" in err and err.count("tokens/s") == 3


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


MINIMIND2_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "reference" / "minimind2_tokenizer"


@pytest.mark.skipif(not MINIMIND2_TOKENIZER.exists(), reason="MiniMind2's tokenizer files are not beside the checkout")
def test_chat_with_an_upstream_minimind2_pth_and_its_tokenizer(tmp_path, capsys):
    # upstream saves `{k: v.half()}` of the full state dict with plain torch.save, no config
    upstream = tiny_model(6400, num_attention_heads=8, num_key_value_heads=2)
    torch.save({k: v.half() for k, v in upstream.state_dict().items()}, tmp_path / "full_sft_64.pth")
    model, tokenizer = load_chat_model(tmp_path / "full_sft_64.pth", tokenizer=MINIMIND2_TOKENIZER, device="cpu")
    assert next(model.parameters()).dtype == torch.float32
    ids = torch.tensor([tokenizer.encode("你好，MiniMind!")])
    upstream.load_state_dict({k: v.half().float() for k, v in upstream.state_dict().items()})  # fp16-rounded weights
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, upstream(ids).logits, atol=1e-5)
    assert main(["--model", str(tmp_path / "full_sft_64.pth"), "--tokenizer", str(MINIMIND2_TOKENIZER),
                 "--device", "cpu", "--max-new-tokens", "5", "--temperature", "0", "--prompt", "你好"]) == 0
    assert "tokens/s" in capsys.readouterr().err


def test_plan_reply_caps_the_reply_to_the_context_left(checkpoint):
    _, _, tokenizer = checkpoint
    messages = [{"role": "user", "content": "Who are you?"}]
    prompt_len = len(tokenizer.encode_chat_prompt(messages))
    context = prompt_len + 60  # room for 60 new tokens, more than half the context
    kept, max_new = plan_reply(messages, tokenizer, context=context, max_new_tokens=512)
    assert kept == messages and max_new == 60
    kept, max_new = plan_reply(messages, tokenizer, context=1024, max_new_tokens=64)
    assert max_new == 64
    long = [{"role": "user", "content": "x " * 200}, {"role": "assistant", "content": "y"}] + messages
    kept, max_new = plan_reply(long, tokenizer, context=context, max_new_tokens=512)
    assert kept == messages and max_new == 60
    with pytest.raises(ValueError, match="context"):
        plan_reply(messages, tokenizer, context=prompt_len + 10, max_new_tokens=512)


def test_zoo_names_resolve_to_their_artefact_builders(monkeypatch, tmp_path):
    from minimind import zoo
    from minimind.inference import model_path

    monkeypatch.setattr(zoo, "path", lambda name: tmp_path / f"{name}-artefact")
    assert model_path("sft") == tmp_path / "sft-artefact"
    assert set(zoo.CHAT_MODELS) <= set(zoo.RECIPES)  # every documented name has a recipe (not built here)
    with pytest.raises(FileNotFoundError, match="zoo artefact"):
        model_path("no_such_artefact")
    with pytest.raises(FileNotFoundError, match="LoRA adapter; pass --model sft --lora"):
        model_path("lora_identity")
    with pytest.raises(FileNotFoundError, match="no such checkpoint$"):
        model_path(str(tmp_path / "missing"))


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_content_never_holds_the_reasoning_format_tags(chunk):
    # a thinking budget forces </think>; the model then may close its thought once more itself
    reply = "7+5=12</think> carry the 1</think>\n<answer>\n42\n</answer>"
    joined, _ = split_all(reply, thinking=True, chunk=chunk)
    assert joined == {"reasoning": "7+5=12", "content": "carry the 1\n42"}
    joined, _ = split_all("<answer>7</answer>", thinking=False, chunk=chunk)
    assert joined["content"] == "7"


def test_a_reply_stopped_early_reports_its_speed_and_why(checkpoint):
    _, model, tokenizer = checkpoint
    reply = stream_reply(model, tokenizer, [{"role": "user", "content": "Who are you?"}],
                         SamplingParams(max_new_tokens=40, stop_token_ids=()))
    for count, _ in enumerate(reply, start=1):
        if count == 3:
            break
    reply.close()
    assert reply.finish_reason == "cancelled" and reply.seconds > 0 and reply.tokens_per_second > 0


def test_cli_after_ctrl_c_prints_the_tokens_and_cancelled(checkpoint, capsys, monkeypatch):
    directory, _, _ = checkpoint
    import minimind.chat as chat_module

    def interrupted(reply, out, show_reasoning_header, tools=None):
        for count, _ in enumerate(reply, start=1):
            if count == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(chat_module, "_print_reply", interrupted)
    assert main(["--model", str(directory), "--device", "cpu", "--max-new-tokens", "40", "--prompt", "Hi"]) == 0
    stats = capsys.readouterr().err.strip().splitlines()[-1]
    assert stats.endswith("finish: cancelled]") and " 0.0 tokens/s" not in stats


def test_cli_quotes_the_max_new_tokens_it_was_given_for_an_over_long_message(checkpoint, capsys):
    directory, _, _ = checkpoint  # the tiny model's context is 256 tokens
    assert main(["--model", str(directory), "--device", "cpu", "--max-new-tokens", "512",
                 "--prompt", "Pelum lives in Varo. " * 60]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens=512" in err and "at least 128 tokens" in err, err


# ---------------------------------------------------------------------------------------------
# Tools: calls shown, run, their results fed back for the next reply.

def scripted_chat(monkeypatch, script):
    from minimind import chat

    tokenizer = tiny_tokenizer()
    model = ScriptedModel(tiny_model(tokenizer.vocab_size, max_position_embeddings=4096), tokenizer, script)
    monkeypatch.setattr(chat, "load_chat_model", lambda *args, **kwargs: (model, tokenizer))
    return model, tokenizer


CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "6*7"}}\n</tool_call>'


def test_chat_runs_a_tool_call_and_answers_with_its_result(monkeypatch, capsys):
    model, tokenizer = scripted_chat(monkeypatch, lambda prompt: "6*7 is 42." if "<tool_response>" in prompt else CALL)
    assert main(["--model", "scripted", "--tools", "--temperature", "0", "--prompt", "What is 6*7?"]) == 0
    out = capsys.readouterr().out
    assert '[tool call] calculator({"expression": "6*7"})' in out and "<tool_call>" not in out
    assert "[tool result] 42\n" in out and out.rstrip().endswith("6*7 is 42.")
    first, second = model.prompts
    assert '"name": "calculator"' in first and '"name": "lookup_person"' in first  # the signatures were offered
    assert second.endswith("<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
    assert CALL + "<|im_end|>" in second  # the call went back into the history as the model wrote it


def test_chat_answers_a_malformed_call_with_an_error_the_model_can_read(monkeypatch, capsys):
    bad = '<tool_call>\n{"name": "weather", "arguments": {}}\n</tool_call>'
    model, _ = scripted_chat(monkeypatch, lambda prompt: "Sorry." if "<tool_response>" in prompt else bad)
    assert main(["--model", "scripted", "--tools", "--temperature", "0", "--prompt", "Weather?"]) == 0
    out = capsys.readouterr().out
    assert "[malformed tool call: unknown tool 'weather' (the tools are: calculator, lookup_person)]" in out
    assert "[tool result] error: unknown tool 'weather'" in out
    assert "error: unknown tool 'weather'" in model.prompts[-1] and out.rstrip().endswith("Sorry.")


def test_chat_stops_a_model_that_never_stops_calling_tools(monkeypatch, capsys):
    model, _ = scripted_chat(monkeypatch, lambda prompt: CALL)
    assert main(["--model", "scripted", "--tools", "--max_tool_rounds", "2", "--temperature", "0",
                 "--prompt", "Loop?"]) == 0
    captured = capsys.readouterr()
    assert len(model.prompts) == 3 and captured.out.count("[tool result] 42") == 2
    assert "still calling tools after 2 rounds" in captured.err


def test_without_tools_a_call_is_printed_as_text(monkeypatch, capsys):
    model, _ = scripted_chat(monkeypatch, lambda prompt: CALL)
    assert main(["--model", "scripted", "--temperature", "0", "--prompt", "6*7?"]) == 0
    assert CALL in capsys.readouterr().out and len(model.prompts) == 1 and "<tools>" not in model.prompts[0]
