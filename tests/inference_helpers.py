"""Small artefacts the inference tests share: a tokenizer trained in a second on a few
bilingual lines, and a random tiny model whose vocabulary matches it."""
import torch

from minimind.config import get_config
from minimind.model import MiniMind
from minimind.tokenizer import train_tokenizer

TEXTS = [
    "Pelum lives in Varo. Pelum is 23 years old and works as a tailor.",
    "Who are you? I am MiniMind, a small language model.",
    "佩伦住在瓦罗。佩伦二十三岁，是一名裁缝。",
    "你是谁？我是MiniMind，一个小小的语言模型。",
    "What is 17 + 25? <think>7+5=12, write 2 carry 1. 1+2+1=4. So 42.</think><answer>42</answer>",
    "The quick brown fox jumps over the lazy dog 123 times! Ça va? 🙂",
] * 20


def tiny_tokenizer(vocab_size: int = 400):
    return train_tokenizer(TEXTS, vocab_size=vocab_size)


def tiny_model(vocab_size: int, seed: int = 0, std: float = 0.3, **overrides):
    """A random `tiny` model; weights with a large std so greedy output varies token to token."""
    torch.manual_seed(seed)
    model = MiniMind(get_config("tiny", vocab_size=vocab_size, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, std)
    return model


def save_tiny_checkpoint(directory, seed: int = 0, **overrides):
    """Save a tiny model with its tokenizer into `directory`; returns (model, tokenizer)."""
    from minimind.checkpoint import save_model

    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer.vocab_size, seed=seed, **overrides)
    save_model(model, directory)
    tokenizer.save(directory)
    return model, tokenizer


class ScriptedModel(torch.nn.Module):
    """A model that writes the reply `script(prompt_text)` returns, token by token, then
    <|im_end|>: the tiny model's real forward pass (caches and shapes as in use), its last logits
    replaced. It records every prompt it was given (`prompts`), so a test sees what was rendered."""

    def __init__(self, inner, tokenizer, script):
        super().__init__()
        self.inner, self.config, self.tokenizer, self.script = inner, inner.config, tokenizer, script
        self.prompts: list[str] = []
        self._reply: list[int] = []
        self._step = 0

    def num_parameters(self) -> int:
        return self.inner.num_parameters()

    def forward(self, input_ids, *args, cache=None, **kwargs):
        from minimind.tokenizer import EOS_ID

        starting = cache is None or cache.length == 0
        output = self.inner(input_ids, *args, cache=cache, **kwargs)
        if starting:
            prompt = self.tokenizer.decode(input_ids[0].tolist())
            self.prompts.append(prompt)
            self._reply, self._step = self.tokenizer.encode(self.script(prompt)) + [EOS_ID], 0
        token = self._reply[min(self._step, len(self._reply) - 1)]
        self._step += 1
        output.logits[:, -1, :] = float("-inf")
        output.logits[:, -1, token] = 0.0
        return output
