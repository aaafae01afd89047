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

The chat template renders tools as MiniMind2's does (signatures in the system turn, assistant
`tool_calls` as ``<tool_call>`` blocks, `tool` results as ``<tool_response>`` blocks in a user
turn), and in two variants, MiniMind2's and minimind-3's (a think block in every assistant turn),
the one a loaded `tokenizer_config.json` names. The tool tags are plain text in MiniMind2's
vocabulary and so in the book's (adding them as tokens would shift every id after them);
minimind-3's vocabulary has them as tokens, and the template writes them as those ids there.

The reasoning and tool tags are spelled here once (`THINK_START` … `ANSWER_END`, together
`THINK_TOKENS`; `TOOL_CALL_START` …), and so are the chat roles (`ROLES`, `CHAT_ROLES`): the data,
the generator, the tools and the evaluation import them.
Train a tokenizer from the command line with `python -m minimind.train.tokenizer`.
"""
import json
import re
from pathlib import Path
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"
THINK_TOKENS = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *THINK_TOKENS]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant"
ROLES = ("system", "user", "assistant")  # the roles of a plain chat (what the data tools check)
TOOL_ROLE = "tool"  # a tool's result, rendered inside a user turn as <tool_response>…</tool_response>
CHAT_ROLES = (*ROLES, TOOL_ROLE)  # every role the template renders
# Tool use, as MiniMind2's template writes it. In MiniMind2's vocabulary (and the book's) these tags
# are plain text; minimind-3's has <tool_call>…</tool_response> as added tokens. The template marks
# them as control pieces, so each becomes its id exactly where the vocabulary has one.
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOL_RESPONSE_START, TOOL_RESPONSE_END = "<tool_response>", "</tool_response>"
TOOLS_START, TOOLS_END = "<tools>", "</tools>"
TOOL_TAGS = (TOOL_CALL_START, TOOL_CALL_END, TOOL_RESPONSE_START, TOOL_RESPONSE_END)
TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_FOOTER = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                "\"arguments\": <args-json-object>}\n</tool_call>")
# The two chat templates: MiniMind2's (default system prompt, replies verbatim) and minimind-3's
# (no default system prompt, a <think> block in every assistant turn, `open_thinking`).
TEMPLATES = ("minimind2", "minimind3")
MODEL_MAX_LENGTH = 32768
LONG_TEXT_WINDOW = 1 << 16  # characters `encode_pieces` encodes at a time

# CJK Unified Ideographs (+ extension A and compatibility ideographs): isolated before the
# byte-level split so that Chinese never glues onto a Latin name.
CJK_CHAR = "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
CJK_RUN = CJK_CHAR + "+"


def _jinja(text: str) -> str:
    """`text` as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


# The pieces both Jinja templates share: the system turn (with the tool signatures when `tools` is
# given), user and tool turns, and an assistant's tool calls.
_JINJA_TOOLS_SYSTEM = (
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages[0]['role'] == 'system' -%}{{- messages[0]['content'] + '\\n\\n' -}}{%- endif -%}"
    "{{- " + _jinja(TOOLS_HEADER) + " -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- " + _jinja(TOOLS_FOOTER + EOS_TOKEN + "\n") + " -}}"
)
_JINJA_TURNS_START = (
    "{%- for message in messages -%}"
    "{%- set content = message['content'] if message['content'] is string else '' -%}"
    "{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or loop.previtem['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' -}}"
    "{%- if loop.last or loop.nextitem['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' }}"
)
_JINJA_TOOL_CALLS = (
    "{%- for call in (message['tool_calls'] or []) -%}"
    "{%- set function = call['function'] if call['function'] else call -%}"
    "{%- if content or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>\\n{\"name\": \"' + function['name'] + '\", \"arguments\": ' -}}"
    "{{- function['arguments'] if function['arguments'] is string else function['arguments'] | tojson -}}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' }}{%- endgeneration -%}"
)
_JINJA_TURNS_END = (
    "{%- elif message['role'] != 'system' -%}"
    "{{- raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

# The chat templates for transformers (`tokenizer_config.json`). Each renders exactly what
# `MiniMindTokenizer.apply_chat_template` renders with that template (a test checks this);
# MINIMIND2_CHAT_TEMPLATE renders exactly what MiniMind2's own renders (for enable_thinking
# None/False), tools and tool calls included, and MINIMIND3_CHAT_TEMPLATE what minimind-3's does.
# `{% generation %}` marks the supervised span so `return_assistant_tokens_mask=True` gives our
# loss mask too.
MINIMIND2_CHAT_TEMPLATE = (
    "{%- if tools -%}" + _JINJA_TOOLS_SYSTEM +
    "{%- elif messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    + _JINJA_TURNS_START +
    "{%- generation -%}{{- content -}}" + _JINJA_TOOL_CALLS + _JINJA_TURNS_END +
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- elif enable_thinking is defined and enable_thinking is true -%}"
    "{{- '<think>\\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
)
CHAT_TEMPLATE = MINIMIND2_CHAT_TEMPLATE  # the book's tokenizer's

MINIMIND3_CHAT_TEMPLATE = (
    "{%- if tools -%}" + _JINJA_TOOLS_SYSTEM +
    "{%- elif messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    + _JINJA_TURNS_START +
    # the reasoning: the message's reasoning_content, else the text before </think> in its content
    "{%- set reasoning = message['reasoning_content'] if message['reasoning_content'] is string else none -%}"
    "{%- if reasoning is none and '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- generation -%}"
    "{{- '<think>\\n' + (reasoning or '').strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') -}}"
    + _JINJA_TOOL_CALLS + _JINJA_TURNS_END +
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if (open_thinking is defined and open_thinking is true) or "
    "(enable_thinking is defined and enable_thinking is true) -%}"
    "{{- '<think>\\n' }}"
    "{%- else -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif -%}"
    "{%- endif -%}"
)
CHAT_TEMPLATES = {"minimind2": MINIMIND2_CHAT_TEMPLATE, "minimind3": MINIMIND3_CHAT_TEMPLATE}


def template_of_config(config: dict, source: str = "tokenizer_config.json") -> str:
    """Which of `TEMPLATES` a `tokenizer_config.json` asks for: minimind-3's template is the one
    with `open_thinking`; every other (MiniMind2's, the book's, none) renders as MiniMind2's."""
    template = config.get("chat_template")
    if isinstance(template, list):  # transformers' named templates: [{"name", "template"}, …]
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{source}: chat_template must be a string, got {type(template).__name__}")
    return "minimind3" if template and "open_thinking" in template else "minimind2"


def _parse_json_field(value, where: str):
    """A field upstream's SFT data stores as a JSON string (`tools`, `tool_calls`), as its value."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is a string but not valid JSON ({error.msg} at character {error.pos})") from None


class ToolCallText(NamedTuple):
    """One tool call of an assistant message, as the template writes it."""

    name: str
    arguments: str  # JSON text: a string argument verbatim, an object as `tojson` writes it


def tool_json(value) -> str:
    """JSON as the chat template writes it (transformers' `tojson`): key order kept, non-ASCII as is."""
    return json.dumps(value, ensure_ascii=False)


def _tool_calls_of(message: dict, where: str) -> List[ToolCallText]:
    calls = _parse_json_field(message.get("tool_calls"), f"{where}.tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise ValueError(f"{where}.tool_calls must be a list of calls, got {type(calls).__name__}")
    parsed = []
    for i, call in enumerate(calls):
        at = f"{where}.tool_calls[{i}]"
        if not isinstance(call, dict):
            raise ValueError(f"{at} must be an object, got {type(call).__name__}")
        if call.get("function"):  # OpenAI's {"id", "type": "function", "function": {"name", "arguments"}}
            call, at = call["function"], f"{at}.function"
            if not isinstance(call, dict):
                raise ValueError(f"{at} must be an object, got {type(call).__name__}")
        name, arguments = call.get("name"), call.get("arguments")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{at}.name must be a non-empty string, got {name!r}")
        if "arguments" not in call:
            raise ValueError(f"{at} has no 'arguments'")
        parsed.append(ToolCallText(name, arguments if isinstance(arguments, str) else tool_json(arguments)))
    return parsed


def tools_of(messages, tools=None) -> Optional[list]:
    """The tool signatures a conversation is rendered with: `tools` when given, else those its
    system message carries in a `tools` field (upstream's SFT data: a list or a JSON string)."""
    if tools is None and messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        tools = _parse_json_field(messages[0].get("tools"), "messages[0].tools")
    if tools is None:
        return None
    if not isinstance(tools, (list, tuple)) or not all(isinstance(tool, dict) for tool in tools):
        raise ValueError(f"tools must be a list of JSON objects (function signatures), got {tools!r:.80}")
    return list(tools) or None


def check_messages(messages, what: str = "messages") -> None:
    """Raise ValueError naming the message and field unless `messages` is a conversation the
    template renders: {"role", "content"} dicts (roles `CHAT_ROLES`, content a string); an
    assistant message may carry `tool_calls` (then its content may be null or absent) and
    `reasoning_content`."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{what} must be a non-empty list of {{'role', 'content'}} dicts")
    for i, message in enumerate(messages):
        where = f"{what}[{i}]"
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"{where} must be a dict with 'role' and 'content'")
        role = message["role"]
        if role not in CHAT_ROLES:
            raise ValueError(f"{where} has unknown role {role!r} (expected one of {', '.join(CHAT_ROLES)})")
        calls = _tool_calls_of(message, where) if role == "assistant" else []
        if message.get("tool_calls") and role != "assistant":
            raise ValueError(f"{where} has tool_calls, but only an assistant message makes tool calls")
        if "content" not in message and not calls:
            raise ValueError(f"{where} must be a dict with 'role' and 'content'")
        content = message.get("content")
        if not isinstance(content, str) and not (content is None and calls):
            raise ValueError(f"{where}.content must be a string, got {type(content).__name__}")
        reasoning = message.get("reasoning_content")
        if reasoning is not None and not isinstance(reasoning, str):
            raise ValueError(f"{where}.reasoning_content must be a string, got {type(reasoning).__name__}")


def tool_call_opening(tool_name: Optional[str] = None) -> str:
    """The text a reply starts with when the prompt opens a tool call (`encode_chat_prompt(…,
    open_tool_call=True)`): the model continues it with a tool's name, or with the arguments when
    `tool_name` is given. Prepend it to the generated text before parsing the call."""
    opening = TOOL_CALL_START + '\n{"name": "'
    return opening if tool_name is None else opening + tool_name + '", "arguments": '


class Segment(NamedTuple):
    """One piece of a rendered chat; joined, the pieces are the prompt."""

    text: str
    supervised: bool  # a target of the loss: an assistant turn after its header, its <|im_end|> and the \n after it
    kind: str  # "control" (a special token the template writes), "template" (its other text),
    #            "content" (a message's content) or "reply" (what an assistant wrote: content, reasoning, calls)


_TAG_PATTERN = re.compile("(" + "|".join(re.escape(tag) for tag in (
    THINK_START, THINK_END, *TOOL_TAGS, TOOLS_START, TOOLS_END)) + ")")


def _control(text: str, supervised: bool = False) -> Segment:
    return Segment(text, supervised, "control")


def _text(text: str, supervised: bool = False) -> Segment:
    return Segment(text, supervised, "template")


def _template_text(text: str) -> List[Segment]:
    """Text the template writes, its tags as control pieces (ids where the vocabulary has them)."""
    return [Segment(part, False, "control" if index % 2 else "template")
            for index, part in enumerate(_TAG_PATTERN.split(text)) if part]


def template_segments(messages, add_generation_prompt: bool = False, enable_thinking: Optional[bool] = None,
                      *, tools=None, template: str = "minimind2", open_tool_call: bool = False,
                      tool_name: Optional[str] = None) -> List[Segment]:
    """The rendered chat as a list of `Segment` pieces; joined they are the prompt.

    supervised is True for each assistant turn after its ``<|im_start|>assistant\\n`` header: its
    reply (minimind-3: with its think block), its tool calls, its ``<|im_end|>`` and the ``\\n``
    after it. Upstream MiniMind supervises the newline after ``<|im_end|>`` too, and so do we (it
    costs nothing at generation, which stops at ``<|im_end|>``). `kind` tells the encoder which
    pieces the template wrote (only those may become control tokens) and which came from the
    messages. `tools` (or a system message's `tools` field): the signatures of the tools the
    model may call, written into the system turn. `template`: one of `TEMPLATES`.
    `open_tool_call` ends the generation prompt inside a tool call (`tool_call_opening`).
    """
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r} (expected one of {', '.join(TEMPLATES)})")
    check_messages(messages)
    tools = tools_of(messages, tools)
    if tool_name is not None and not open_tool_call:
        raise ValueError("tool_name needs open_tool_call=True (it names the tool of the opened call)")

    def turn(role: str, content: str) -> list:
        return [_control(BOS_TOKEN), _text(f"{role}\n"), Segment(content, False, "content"), _control(EOS_TOKEN),
                _text("\n")]

    first = messages[0]
    if tools:
        pieces = [_control(BOS_TOKEN), _text("system\n")]
        if first["role"] == "system":
            pieces += [Segment(first["content"], False, "content"), _text("\n\n")]
        pieces += _template_text(TOOLS_HEADER)
        for tool in tools:
            pieces += [_text("\n"), Segment(tool_json(tool), False, "content")]
        pieces += _template_text(TOOLS_FOOTER) + [_control(EOS_TOKEN), _text("\n")]
    elif first["role"] == "system":
        pieces = turn("system", first["content"])
    else:
        pieces = turn("system", DEFAULT_SYSTEM_PROMPT) if template == "minimind2" else []

    for index, message in enumerate(messages):
        role = message["role"]
        content = message.get("content") if isinstance(message.get("content"), str) else ""
        if role == "assistant":
            pieces += [_control(BOS_TOKEN), _text("assistant\n")] + _assistant_turn(message, content, template, index)
        elif role == TOOL_ROLE:
            if index == 0 or messages[index - 1]["role"] != TOOL_ROLE:
                pieces += [_control(BOS_TOKEN), _text("user")]
            pieces += [_text("\n"), _control(TOOL_RESPONSE_START), _text("\n"), Segment(content, False, "content"),
                       _text("\n"), _control(TOOL_RESPONSE_END)]
            if index == len(messages) - 1 or messages[index + 1]["role"] != TOOL_ROLE:
                pieces += [_control(EOS_TOKEN), _text("\n")]
        elif role == "user" or index > 0:  # a system message after the first is rendered in place
            pieces += turn(role, content)
    if add_generation_prompt:
        if open_tool_call and enable_thinking is True:
            raise ValueError("open_tool_call cannot be combined with enable_thinking=True: the call comes "
                             "after the think block, so the prompt cannot end inside both")
        pieces += [_control(BOS_TOKEN), _text("assistant\n")]
        if template == "minimind3":  # minimind-3 always writes a think block: open, or empty and closed
            pieces += [_control(THINK_START), _text("\n")] if enable_thinking is True else \
                [_control(THINK_START), _text("\n\n"), _control(THINK_END), _text("\n\n")]
        elif enable_thinking is False:
            pieces += [_control(THINK_START), _text("\n\n"), _control(THINK_END), _text("\n\n")]
        elif enable_thinking is True:  # our extension: open a think block for the model to fill
            pieces += [_control(THINK_START), _text("\n")]
        if open_tool_call:
            pieces += [_control(TOOL_CALL_START), _text('\n{"name": "')]
            if tool_name is not None:
                pieces += [Segment(tool_name, False, "content"), _text('", "arguments": ')]
    elif open_tool_call:
        raise ValueError("open_tool_call needs add_generation_prompt=True (it opens a call in the reply)")
    return pieces


def _assistant_turn(message: dict, content: str, template: str, index: int) -> List[Segment]:
    """An assistant turn after its header, every piece supervised: minimind-3's think block, the
    reply, the tool calls, ``<|im_end|>\\n``."""
    def reply(value: str) -> Segment:
        return Segment(value, True, "reply")

    def text(value: str) -> Segment:
        return _text(value, supervised=True)

    def control(value: str) -> Segment:
        return _control(value, supervised=True)

    pieces = []
    if template == "minimind3":
        reasoning = message.get("reasoning_content")
        if not isinstance(reasoning, str):
            reasoning = ""
            if THINK_END in content:
                reasoning = content.split(THINK_END)[0].rstrip("\n").split(THINK_START)[-1].lstrip("\n")
                content = content.split(THINK_END)[-1].lstrip("\n")
        pieces += [control(THINK_START), text("\n"), reply(reasoning.strip("\n")), text("\n"), control(THINK_END),
                   text("\n\n"), reply(content.lstrip("\n"))]
    else:
        pieces.append(reply(content))
    for number, call in enumerate(_tool_calls_of(message, f"messages[{index}]")):
        if content or number > 0:
            pieces.append(text("\n"))
        pieces += [control(TOOL_CALL_START), text('\n{"name": "'), reply(call.name), text('", "arguments": '),
                   reply(call.arguments), text("}\n"), control(TOOL_CALL_END)]
    return pieces + [control(EOS_TOKEN), text("\n")]


class MiniMindTokenizer:
    """A byte-level BPE tokenizer with MiniMind's special ids and chat template.

    `encode` adds nothing (no BOS/EOS): callers that want them add `BOS_ID`/`EOS_ID`.
    `chat_template` is one of `TEMPLATES`: "minimind2" (the book's and MiniMind2's) or
    "minimind3"; `from_pretrained` takes it from the `tokenizer_config.json` beside the file.
    """

    def __init__(self, backend, source: str = "<memory>", chat_template: str = "minimind2"):
        if chat_template not in TEMPLATES:
            raise ValueError(f"{source}: unknown chat template {chat_template!r} (expected one of {', '.join(TEMPLATES)})")
        self.backend = backend  # a tokenizers.Tokenizer
        self.source = source
        self.chat_template = chat_template
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
        Works for tokenizers saved by :meth:`save` and for MiniMind2's and minimind-3's released
        files; the chat template is the one the `tokenizer_config.json` beside it names
        (`template_of_config`), MiniMind2's when there is none."""
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no tokenizer.json there")
        try:
            backend = Tokenizer.from_file(str(file))
        except Exception as error:  # tokenizers raises a bare Exception on malformed JSON
            raise ValueError(f"{file}: not a valid tokenizer.json ({error})") from error
        template = "minimind2"
        config_file = file.parent / "tokenizer_config.json"
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{config_file}:{error.lineno}: invalid JSON ({error.msg})") from None
            if not isinstance(config, dict):
                raise ValueError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
            template = template_of_config(config, str(config_file))
        return cls(backend, source=str(file), chat_template=template)

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
            "chat_template": CHAT_TEMPLATES[self.chat_template],
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
    def template_segments(self, messages, add_generation_prompt: bool = False, enable_thinking: Optional[bool] = None,
                          **options) -> List[Segment]:
        """`template_segments` with this tokenizer's chat template."""
        return template_segments(messages, add_generation_prompt, enable_thinking, template=self.chat_template,
                                 **options)

    def apply_chat_template(self, messages, add_generation_prompt: bool = False,
                            enable_thinking: Optional[bool] = None, *, tools=None) -> str:
        """Render `messages` exactly as this tokenizer's template (MiniMind2's or minimind-3's) does.

        MiniMind2's: a default system prompt ("You are a helpful assistant") is added when the
        first message is not a system message and no tools are given. With the generation prompt,
        ``enable_thinking=False`` appends an empty think block (``<think>\\n\\n</think>\\n\\n``)
        as MiniMind2 does, and ``enable_thinking=True`` — our extension; MiniMind2 adds nothing —
        appends ``<think>\\n`` so a reasoning model starts inside its think block.
        minimind-3's: no default system prompt; every assistant turn has a think block (its
        `reasoning_content`, or the text before ``</think>`` in its content); the generation
        prompt opens it with ``enable_thinking=True`` (minimind-3's `open_thinking`), else
        closes it empty.

        Tools (both templates): `tools` (or a first system message's `tools` field) is a list of
        function signatures, written into the system turn between ``<tools>`` and ``</tools>``;
        an assistant message's `tool_calls` (OpenAI's ``{"function": {"name", "arguments"}}`` or
        ``{"name", "arguments"}``; arguments an object or a JSON string) become
        ``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>`` blocks; consecutive `tool`
        messages share one user turn, each as ``<tool_response>\\n…\\n</tool_response>``.

        The text cannot tell a control token the template wrote from the same string inside a
        message: to get ids, use `encode_chat_prompt` or `render_conversation`, not `encode` of this.
        """
        pieces = self.template_segments(messages, add_generation_prompt, enable_thinking, tools=tools)
        return "".join(segment.text for segment in pieces)

    # Message content is text: a special-token string inside it (`<|im_end|>`, `<|im_start|>`) is
    # encoded as the sub-words of its characters, never as the control id, so no message can close
    # its turn and forge another. Only the template writes control tokens. The one exception is
    # the training renderer's: the reasoning tags inside assistant replies (the format a reasoning
    # model is trained to write) stay single tokens.
    def render_conversation(self, messages, max_len: Optional[int] = None, *, tools=None) -> Tuple[List[int], List[int]]:
        """Token ids of the rendered conversation and its loss mask, from one rendering: what
        training sees.

        ``mask[i] == 1`` iff ``ids[i]`` is a supervised target: a token of an assistant reply (its
        think block and tool calls included), its closing ``<|im_end|>`` or the ``\\n`` after it
        (as upstream). System, user, tool results and the ``<|im_start|>assistant\\n`` header are 0. A token belongs to the span its first character
        is in. With `max_len`, both lists are cut to the same length (a truncated reply stays
        supervised up to the cut). Message contents are text; only in assistant replies are the
        reasoning tags (``<think>``, ``</think>``, ``<answer>``, ``</answer>``) their single tokens,
        so for content without other special strings ``ids == encode(apply_chat_template(messages))``.
        """
        pieces = self.template_segments(messages, tools=tools)
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

    def encode_chat_prompt(self, messages, enable_thinking: Optional[bool] = None, *, tools=None,
                           open_tool_call: bool = False, tool_name: Optional[str] = None) -> List[int]:
        """Ids of the template with the generation prompt: what a model continues to reply. Every
        message content is text (the reasoning tags of earlier replies too). `tools`: the tools
        the model may call. `open_tool_call` ends the prompt inside a tool call, so the reply is
        one (OpenAI's tool_choice "required"); with `tool_name`, a call of that tool (a named
        tool_choice). The reply then continues `tool_call_opening(tool_name)`."""
        pieces = self.template_segments(messages, add_generation_prompt=True, enable_thinking=enable_thinking,
                                        tools=tools, open_tool_call=open_tool_call, tool_name=tool_name)
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
