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

The reasoning tags are spelled here once (`THINK_START` … `ANSWER_END`, together `THINK_TOKENS`),
and so are the chat roles (`ROLES`): the data, the generator and the evaluation import them.
Train a tokenizer from the command line with `python -m minimind.train.tokenizer`.
"""
import json
from pathlib import Path
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"
THINK_TOKENS = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *THINK_TOKENS]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant"
ROLES = ("system", "user", "assistant")
MODEL_MAX_LENGTH = 32768
LONG_TEXT_WINDOW = 1 << 16  # characters `encode_pieces` encodes at a time

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


class Segment(NamedTuple):
    """One piece of a rendered chat; joined, the pieces are the prompt."""

    text: str
    supervised: bool  # a target of the loss: an assistant reply, its <|im_end|> and the \n after it
    kind: str  # "control" (a special token the template writes), "template" (its other text),
    #            "content" (a message's content) or "reply" (an assistant message's content)


def template_segments(messages, add_generation_prompt: bool = False,
                      enable_thinking: Optional[bool] = None) -> List[Segment]:
    """The rendered chat as a list of `Segment` pieces; joined they are the prompt.

    supervised is True for each assistant reply followed by its ``<|im_end|>\\n``: upstream
    MiniMind supervises the newline after ``<|im_end|>`` too, and so do we (it costs nothing
    at generation, which stops at ``<|im_end|>``). `kind` tells the encoder which pieces the
    template wrote (only those may become control tokens) and which came from the messages.
    """
    _check_messages(messages)

    def turn(role: str, content: str, kind: str = "content", supervised: bool = False) -> list:
        return [Segment(BOS_TOKEN, False, "control"), Segment(f"{role}\n", False, "template"),
                Segment(content, supervised, kind), Segment(EOS_TOKEN, supervised, "control"),
                Segment("\n", supervised, "template")]

    first = messages[0]
    pieces = turn("system", first["content"] if first["role"] == "system" else DEFAULT_SYSTEM_PROMPT)
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "assistant":
            pieces += turn("assistant", content, "reply", supervised=True)
        elif role == "user" or index > 0:  # a system message after the first is rendered in place
            pieces += turn(role, content)
    if add_generation_prompt:
        pieces += [Segment(BOS_TOKEN, False, "control"), Segment("assistant\n", False, "template")]
        if enable_thinking is False:
            pieces += [Segment(THINK_START, False, "control"), Segment("\n\n", False, "template"),
                       Segment(THINK_END, False, "control"), Segment("\n\n", False, "template")]
        elif enable_thinking is True:  # our extension: open a think block for the model to fill
            pieces += [Segment(THINK_START, False, "control"), Segment("\n", False, "template")]
    return pieces


class MiniMindTokenizer:
    """A byte-level BPE tokenizer with MiniMind's special ids and chat template.

    `encode` adds nothing (no BOS/EOS): callers that want them add `BOS_ID`/`EOS_ID`.
    """

    def __init__(self, backend, source: str = "<memory>"):
        self.backend = backend  # a tokenizers.Tokenizer
        self.source = source
        self._text_backends: dict = {}  # copies of backend matching fewer added tokens, by the tokens kept
        added = backend.get_added_tokens_decoder()
        self._added_ids = {token.content: token_id for token_id, token in added.items()}
        self._added_id_set = frozenset(self._added_ids.values())
        # encode_pieces cuts a text where the encoding breaks anyway; a normalizer, added tokens that
        # swallow neighbouring spaces or that overlap each other would move those places, so such a
        # tokenizer encodes long texts whole
        contents = list(self._added_ids)
        overlapping = any(a != b and (a in b or any(b.startswith(a[k:]) for k in range(1, len(a))))
                          for a in contents for b in contents)
        self._can_cut = (backend.normalizer is None and backend.pre_tokenizer is not None and not overlapping
                         and not any(token.lstrip or token.rstrip or token.single_word for token in added.values()))
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
        from minimind.files import atomic_write

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

    def encode_pieces(self, text: str, window: int = LONG_TEXT_WINDOW) -> Iterator[List[int]]:
        """The ids of `encode(text)` in consecutive pieces, encoding about `window` characters at
        a time, so a long document (a whole book on one line) costs memory for one window, not
        for the whole text at once. The pieces joined are exactly `encode(text)`: each window's
        ids are kept up to a place where the encoding breaks anyway (BPE merges within one
        pre-token, never across pre-tokens or special tokens), and the rest is encoded again with
        the next window. A single pre-token longer than the window is encoded whole."""
        if len(text) <= 2 * window or not self._can_cut:
            yield self.encode(text)
            return
        start = 0
        while len(text) - start > 2 * window:
            kept, advance = self._encode_up_to_a_break(text, start, window)
            yield kept
            start += advance
        if start < len(text):
            yield self.encode(text[start:])

    def _encode_up_to_a_break(self, text: str, start: int, window: int):
        """(ids, characters they cover) of a prefix of `text[start:]` that `encode(text[start:])`
        begins with; `start` must be such a break of the whole text."""
        while True:
            end = min(start + window, len(text))
            for token in self._added_ids:  # never end the window inside a special token
                at = text.find(token, max(start, end - len(token) + 1), end + len(token) - 1)
                if at >= 0:  # it straddles `end`: end before it, or after it when it opens the window
                    end = at if at > start else at + len(token)
            encoding = self.backend.encode(text[start:end], add_special_tokens=False)
            ids, words, offsets = encoding.ids, encoding.word_ids, encoding.offsets
            # every pre-token but the window's last ends where it does in the whole text, so a later
            # one starts at a break; but only after a non-space: a whitespace run at the end of a text
            # is one pre-token, while before a word it gives that word its last character
            for j in range(len(ids) - 1, 0, -1):
                begin = offsets[j][0]
                if ids[j] in self._added_id_set or (words[j] != words[j - 1] and not text[start + begin - 1].isspace()):
                    return ids[:j], begin
            if end == len(text):
                return ids, end - start
            window *= 2  # one pre-token fills the window: look further

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

        The text cannot tell a control token the template wrote from the same string inside a
        message: to get ids, use `encode_chat_prompt` or `render_conversation`, not `encode` of this.
        """
        return "".join(segment.text for segment in template_segments(messages, add_generation_prompt, enable_thinking))

    # Message content is text: a special-token string inside it (`<|im_end|>`, `<|im_start|>`) is
    # encoded as the sub-words of its characters, never as the control id, so no message can close
    # its turn and forge another. Only the template writes control tokens. The one exception is
    # the training renderer's: the reasoning tags inside assistant replies (the format a reasoning
    # model is trained to write) stay single tokens.
    def render_conversation(self, messages, max_len: Optional[int] = None) -> Tuple[List[int], List[int]]:
        """Token ids of the rendered conversation and its loss mask, from one rendering: what
        training sees.

        ``mask[i] == 1`` iff ``ids[i]`` is a supervised target: a token of an assistant reply, its
        closing ``<|im_end|>`` or the ``\\n`` after it (as upstream). System, user and the
        ``<|im_start|>assistant\\n`` header are 0. A token belongs to the span its first character
        is in. With `max_len`, both lists are cut to the same length (a truncated reply stays
        supervised up to the cut). Message contents are text; only in assistant replies are the
        reasoning tags (``<think>``, ``</think>``, ``<answer>``, ``</answer>``) their single tokens,
        so for content without other special strings ``ids == encode(apply_chat_template(messages))``.
        """
        pieces = template_segments(messages)
        spans, position = [], 0
        for piece in pieces:
            if piece.supervised:
                spans.append((position, position + len(piece.text)))
            position += len(piece.text)
        ids, offsets = self._encode_segments(pieces, tags_in_replies=THINK_TOKENS)
        mask = [int(any(start <= begin < end for start, end in spans)) for begin, _ in offsets]
        if max_len is not None:
            ids, mask = ids[:max_len], mask[:max_len]
        return ids, mask

    def encode_chat_prompt(self, messages, enable_thinking: Optional[bool] = None) -> List[int]:
        """Ids of the template with the generation prompt: what a model continues to reply. Every
        message content is text (the reasoning tags of earlier replies too)."""
        pieces = template_segments(messages, add_generation_prompt=True, enable_thinking=enable_thinking)
        return self._encode_segments(pieces, tags_in_replies=())[0]

    def _encode_segments(self, pieces: Sequence[Segment], tags_in_replies: Sequence[str]):
        """(ids, character offsets) of the joined pieces. A control piece that is one token of this
        vocabulary becomes its id; the text between such tokens is encoded in runs, exactly as
        `encode` splits a text at its special tokens (so ids of ordinary content do not change),
        but matching no special token in it, except `tags_in_replies` in a run holding a reply."""
        control = self._added_ids
        ids: List[int] = []
        offsets: List[Tuple[int, int]] = []
        run: List[str] = []
        run_start = position = 0
        run_has_reply = False

        def encode_run():
            text = "".join(run)
            if text:
                backend = self._text_backend(tuple(tags_in_replies) if run_has_reply else ())
                encoding = backend.encode(text, add_special_tokens=False)
                ids.extend(encoding.ids)
                offsets.extend((run_start + begin, run_start + end) for begin, end in encoding.offsets)
            run.clear()

        for piece in pieces:
            if piece.kind == "control" and piece.text in control:
                encode_run()
                ids.append(control[piece.text])
                offsets.append((position, position + len(piece.text)))
                run_has_reply = False
            else:  # text; a control string that is no token here (MiniMind2's <think>) is text too
                if not run:
                    run_start = position
                run.append(piece.text)
                run_has_reply = run_has_reply or piece.kind == "reply"
            position += len(piece.text)
        encode_run()
        return ids, offsets

    def _text_backend(self, keep: Tuple[str, ...]):
        """The backend matching only the added tokens in `keep`: every other special-token string
        is encoded as ordinary text (its byte-level sub-words)."""
        if keep not in self._text_backends:
            from tokenizers import Tokenizer

            state = json.loads(self.backend.to_str())
            state["added_tokens"] = [token for token in state["added_tokens"] if token["content"] in keep]
            self._text_backends[keep] = Tokenizer.from_str(json.dumps(state))
        return self._text_backends[keep]


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
