"""The tokenizer: byte-level BPE training, loading (ours and MiniMind2's), and the chat template.

One class, :class:`MiniMindTokenizer`, wraps a Hugging Face `tokenizers.Tokenizer` and owns the
chat template, so the template exists in exactly one place. Its :meth:`render_conversation`
returns the token ids *and* the loss mask from one rendering, so the two cannot drift apart.

Special tokens (ids 0..6, each a single token): ``<|endoftext|>`` (0, padding),
``<|im_start|>`` (1, BOS), ``<|im_end|>`` (2, EOS), then ``<think>``, ``</think>``,
``<answer>``, ``</answer>``. Ids 0..2 match MiniMind2. MiniMind2 has no reasoning tags: its
tokenizer splits ``<think>`` into ``<``, ``th``, ``ink``, ``>``, which made its reasoning-loss
weights hit every such sub-word; here the tags are single tokens. They are added as
*non-special* tokens (as minimind-3 does), so ``decode(..., skip_special_tokens=True)`` drops
0..2 but keeps the tags a reasoning reply needs.

Pre-tokenization differs from MiniMind2's plain GPT-2 split in two ways that help a small model:
digits are split one per token (arithmetic sees every digit the same way), and runs of CJK
characters are isolated from Latin letters (a name such as ``Pelum`` is the same token in
``Pelum lives in`` and in ``Pelum住在``). Loading MiniMind2's own ``tokenizer.json`` keeps its
pre-tokenizer, so its ids are reproduced exactly.

Train one from the command line::

    python -m minimind.tokenizer --data data/pretrain_train.jsonl --vocab-size 2048 --out out/tokenizer
"""
import argparse
import json
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"
THINK_TOKENS = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *THINK_TOKENS]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant"
ROLES = ("system", "user", "assistant")
MODEL_MAX_LENGTH = 32768

# CJK Unified Ideographs (+ extension A and compatibility ideographs): isolated before the
# byte-level split so that Chinese never glues onto a Latin name.
CJK_CHAR = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
CJK_RUN = CJK_CHAR + "+"

# The chat template for transformers (`tokenizer_config.json`). It renders exactly what
# `MiniMindTokenizer.apply_chat_template` renders (a test checks this), which for
# enable_thinking None/False is exactly MiniMind2's template. `{% generation %}` marks the
# supervised span so `return_assistant_tokens_mask=True` gives our loss mask too.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{- message['content'] + '<|im_end|>\\n' }}{%- endgeneration -%}"
    "{%- elif message['role'] != 'system' -%}"
    "{{- raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- elif enable_thinking is defined and enable_thinking is true -%}"
    "{{- '<think>\\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
)


def _check_messages(messages) -> None:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'")
        if message["role"] not in ROLES:
            raise ValueError(f"messages[{i}] has unknown role {message['role']!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(message["content"], str):
            raise ValueError(f"messages[{i}].content must be a string, got {type(message['content']).__name__}")


def template_segments(messages, add_generation_prompt: bool = False,
                      enable_thinking: Optional[bool] = None) -> List[Tuple[str, bool]]:
    """The rendered chat as a list of (text, supervised) pieces; joined they are the prompt.

    supervised is True for each assistant reply followed by its ``<|im_end|>\\n``: upstream
    MiniMind supervises the newline after ``<|im_end|>`` too, and so do we (it costs nothing
    at generation, which stops at ``<|im_end|>``).
    """
    _check_messages(messages)
    pieces = []
    first = messages[0]
    system = first["content"] if first["role"] == "system" else DEFAULT_SYSTEM_PROMPT
    pieces.append((f"{BOS_TOKEN}system\n{system}{EOS_TOKEN}\n", False))
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "assistant":
            pieces.append((f"{BOS_TOKEN}assistant\n", False))
            pieces.append((f"{content}{EOS_TOKEN}\n", True))
        elif role == "user" or index > 0:  # a system message after the first is rendered in place
            pieces.append((f"{BOS_TOKEN}{role}\n{content}{EOS_TOKEN}\n", False))
    if add_generation_prompt:
        pieces.append((f"{BOS_TOKEN}assistant\n", False))
        if enable_thinking is False:
            pieces.append((f"{THINK_START}\n\n{THINK_END}\n\n", False))
        elif enable_thinking is True:  # our extension: open a think block for the model to fill
            pieces.append((f"{THINK_START}\n", False))
    return pieces


class MiniMindTokenizer:
    """A byte-level BPE tokenizer with MiniMind's special ids and chat template.

    `encode` adds nothing (no BOS/EOS): callers that want them add `BOS_ID`/`EOS_ID`.
    """

    def __init__(self, backend, source: str = "<memory>"):
        self.backend = backend  # a tokenizers.Tokenizer
        self.source = source
        for token, expected in ((PAD_TOKEN, PAD_ID), (BOS_TOKEN, BOS_ID), (EOS_TOKEN, EOS_ID)):
            actual = backend.token_to_id(token)
            if actual != expected:
                raise ValueError(f"{source}: {token!r} has id {actual}, expected {expected}")

    # -- loading and saving -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path) -> "MiniMindTokenizer":
        """Load from a directory holding `tokenizer.json`, or from a `tokenizer.json` path.
        Works for tokenizers saved by :meth:`save` and for MiniMind2's released files."""
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no tokenizer.json there")
        try:
            backend = Tokenizer.from_file(str(file))
        except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"{file}: not a valid tokenizer.json ({error})") from error
        return cls(backend, source=str(file))

    def save(self, directory) -> Path:
        """Write `tokenizer.json` and `tokenizer_config.json` (with the jinja chat template), so
        that `transformers.AutoTokenizer.from_pretrained(directory)` loads it too."""
        from minimind.checkpoint import atomic_write

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "tokenizer.json", lambda temp: self.backend.save(temp, pretty=True))
        config = self.transformers_config()
        atomic_write(
            directory / "tokenizer_config.json",
            lambda temp: Path(temp).write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"),
        )
        return directory

    def transformers_config(self) -> dict:
        """The `tokenizer_config.json` contents: MiniMind2's settings plus our chat template."""
        added = {}
        for token_id, token in sorted(self.backend.get_added_tokens_decoder().items()):
            added[str(token_id)] = {
                "content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
                "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special,
            }
        return {
            "add_bos_token": False,
            "add_eos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
            "unk_token": PAD_TOKEN,
            "clean_up_tokenization_spaces": False,
            "model_max_length": MODEL_MAX_LENGTH,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": CHAT_TEMPLATE,
        }

    # -- ids and text -------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> Optional[int]:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> Optional[str]:
        return self.backend.id_to_token(token_id)

    def encode(self, text: str) -> List[int]:
        """Token ids of `text`; special-token strings in it become their single ids; adds nothing."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [encoding.ids for encoding in self.backend.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`. skip_special_tokens drops ids 0..2 only; reasoning tags are kept."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def tokens(self, text: str) -> List[str]:
        """The pieces `text` is cut into, each decoded to readable text (for displays)."""
        return [self.decode([i]) for i in self.encode(text)]

    @property
    def reasoning_tag_ids(self) -> List[int]:
        """Ids of <think>, </think>, <answer>, </answer>; ValueError when a tag is not one token
        (MiniMind2's tokenizer), because weighting sub-words would hit ordinary text too."""
        ids = [self.token_to_id(tag) for tag in THINK_TOKENS]
        missing = [tag for tag, i in zip(THINK_TOKENS, ids) if i is None]
        if missing:
            raise ValueError(f"{self.source}: {', '.join(missing)} are not single tokens in this vocabulary")
        return ids

    # -- the chat template --------------------------------------------------------------
    def apply_chat_template(self, messages, add_generation_prompt: bool = False,
                            enable_thinking: Optional[bool] = None) -> str:
        """Render `messages` exactly as MiniMind2's template does.

        A default system prompt ("You are a helpful assistant") is added when the first message
        is not a system message. With the generation prompt, ``enable_thinking=False`` appends
        an empty think block (``<think>\\n\\n</think>\\n\\n``) as MiniMind2 does, and
        ``enable_thinking=True`` — our extension; MiniMind2 adds nothing — appends ``<think>\\n``
        so a reasoning model starts inside its think block.
        """
        return "".join(text for text, _ in template_segments(messages, add_generation_prompt, enable_thinking))

    def render_conversation(self, messages, max_len: Optional[int] = None) -> Tuple[List[int], List[int]]:
        """Token ids of the rendered conversation and its loss mask, from one rendering.

        ``ids == encode(apply_chat_template(messages))`` and ``mask[i] == 1`` iff ``ids[i]`` is a
        supervised target: a token of an assistant reply, its closing ``<|im_end|>`` or the
        ``\\n`` after it (as upstream). System, user and the ``<|im_start|>assistant\\n`` header
        are 0. A token belongs to the span its first character is in. With `max_len`, both lists
        are cut to the same length (a truncated reply stays supervised up to the cut).
        """
        pieces = template_segments(messages)
        text = "".join(piece for piece, _ in pieces)
        spans, position = [], 0
        for piece, supervised in pieces:
            if supervised:
                spans.append((position, position + len(piece)))
            position += len(piece)
        encoding = self.backend.encode(text, add_special_tokens=False)
        mask = [int(any(start <= begin < end for start, end in spans)) for begin, _ in encoding.offsets]
        ids = encoding.ids
        if max_len is not None:
            ids, mask = ids[:max_len], mask[:max_len]
        return ids, mask

    def encode_chat_prompt(self, messages, enable_thinking: Optional[bool] = None) -> List[int]:
        """Ids of the template with the generation prompt: what a model continues to reply."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=enable_thinking))


def _new_backend(split_digits: bool, split_cjk: bool = True):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    backend = Tokenizer(models.BPE())
    steps = [pre_tokenizers.Split(Regex(CJK_CHAR if split_cjk else CJK_RUN), behavior="isolated")]
    if split_digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
    backend.decoder = decoders.ByteLevel()
    return backend


def train_tokenizer(texts: Iterable[str], vocab_size: int = 6400, split_digits: bool = True,
                    split_cjk: bool = True, min_frequency: int = 0, show_progress: bool = False) -> MiniMindTokenizer:
    """Train a byte-level BPE tokenizer on `texts` with MiniMind's special tokens at ids 0..6.

    The vocabulary holds the 7 special tokens, the 256 byte symbols, then up to
    ``vocab_size - 263`` merges. On a small corpus training stops early, once every
    pre-tokenized word is a single token: check `.vocab_size` for what you got.
    """
    from tokenizers import Tokenizer, pre_tokenizers, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + 256} (specials + 256 bytes), got {vocab_size}")
    backend = _new_backend(split_digits, split_cjk)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    backend.train_from_iterator(texts, trainer)
    # The trainer adds every listed token as special; the reasoning tags must survive
    # skip_special_tokens, so they become ordinary added tokens (still matched whole).
    state = json.loads(backend.to_str())
    for token in state["added_tokens"]:
        if token["content"] in THINK_TOKENS:
            token["special"] = False
    backend = Tokenizer.from_str(json.dumps(state))
    return MiniMindTokenizer(backend)


def texts_from_jsonl(path, max_docs: int = 0) -> Iterable[str]:
    """Training text of a jsonl file: `text` of pretrain rows, message contents of SFT rows."""
    from minimind.data.jsonl import DataError, read_jsonl

    for count, row in enumerate(read_jsonl(path), start=1):
        if isinstance(row.get("text"), str):
            yield row["text"]
        elif isinstance(row.get("conversations"), list):
            yield "\n".join(str(m.get("content", "")) for m in row["conversations"] if isinstance(m, dict))
        else:
            raise DataError(f"{path}:{count}: neither a 'text' nor a 'conversations' field")
        if max_docs and count >= max_docs:
            return


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minimind.tokenizer", description="Train a byte-level BPE tokenizer.")
    parser.add_argument("--data", nargs="+", help="jsonl files with 'text' or 'conversations' rows (default: the synthetic pretraining corpus)")
    parser.add_argument("--out", default="out/tokenizer", help="output directory (tokenizer.json + tokenizer_config.json)")
    parser.add_argument("--vocab-size", type=int, default=6400)
    parser.add_argument("--max-docs", type=int, default=0, help="read at most this many rows per file (0 = all)")
    parser.add_argument("--no-split-digits", action="store_true", help="let BPE merge digits (MiniMind2 behaviour)")
    args = parser.parse_args(argv)
    if args.data:
        paths = args.data
    else:
        from minimind.data.synthetic import dataset_path

        paths = [dataset_path("pretrain", "train")]

    def texts():
        for path in paths:
            yield from texts_from_jsonl(path, args.max_docs)

    tokenizer = train_tokenizer(texts(), vocab_size=args.vocab_size, split_digits=not args.no_split_digits)
    tokenizer.save(args.out)
    sample = [text for _, text in zip(range(2000), texts())]
    characters = sum(len(text) for text in sample)
    tokens = sum(len(ids) for ids in tokenizer.encode_batch(sample))
    print(f"vocabulary: {tokenizer.vocab_size} tokens (requested {args.vocab_size})")
    print(f"compression on the first {len(sample)} documents: {characters / max(tokens, 1):.2f} characters/token")
    print(f"saved to {args.out}/tokenizer.json and tokenizer_config.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
