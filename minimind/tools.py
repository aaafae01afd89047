"""Tool use: the tools a model may call, finding its calls in what it writes (whole or streamed),
and running them, every failure answered as a `tool` message the model can read, never raised.

    registry = default_registry()                       # calculator + lookup_person
    prompt = tokenizer.encode_chat_prompt(messages, tools=registry.schemas())
    reply = parse_tool_calls(text, registry.names)      # content, calls, malformed calls
    messages += [assistant_message(reply), *registry.respond(reply)]

A call is written as the chat template writes one (`minimind.tokenizer`):
``<tool_call>\\n{"name": "calculator", "arguments": {"expression": "17*3"}}\\n</tool_call>``.
A block that is not valid JSON, names no tool or one that is not offered, or has no arguments
object is a `MalformedToolCall` with the reason; `ToolRegistry.respond` answers it with an error
message, as it answers a tool that fails. The two tools, both bilingual: `calculator` (arithmetic,
evaluated on a parsed expression tree, never `eval`, which upstream MiniMind's web demo
ran on model output) and `lookup_person` (the facts of a person of the book's synthetic world).
"""
from __future__ import annotations

import ast
import json
import math
import operator
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

from minimind.tokenizer import TOOL_CALL_END, TOOL_CALL_START, TOOL_ROLE, tool_json

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict,
              "array": list, "null": type(None)}


# ---------------------------------------------------------------------------------------------
# Calls as the model writes them

def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCall:
    """One well-formed call: a tool's name and its arguments (a JSON object)."""

    name: str
    arguments: dict
    id: str = field(default_factory=new_call_id)

    @property
    def arguments_json(self) -> str:
        return tool_json(self.arguments)

    def openai(self) -> dict:
        """As OpenAI's `tool_calls` entries are: {"id", "type": "function", "function": {"name", "arguments"}}."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_json}}


@dataclass
class MalformedToolCall:
    """A `<tool_call>` block that is not a usable call: its text as written and why."""

    text: str
    reason: str
    name: Optional[str] = None  # the tool it names, when it names one


@dataclass
class ParsedReply:
    """A reply split into its text and its tool calls. `content` is the text outside the call
    blocks (the whitespace the template writes around each block dropped)."""

    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    malformed: list[MalformedToolCall] = field(default_factory=list)


def parse_call(body: str, tools: Optional[Iterable[str]] = None):
    """The `ToolCall` the text between ``<tool_call>`` and ``</tool_call>`` holds, or a
    `MalformedToolCall` saying what is wrong with it. `tools`: the names that may be called
    (None: any name)."""
    text = f"{TOOL_CALL_START}{body}{TOOL_CALL_END}"
    try:
        value = json.loads(body)
    except json.JSONDecodeError as error:
        return MalformedToolCall(text, f"the call is not valid JSON ({error.msg} at character {error.pos})")
    if not isinstance(value, dict):
        return MalformedToolCall(text, f"the call must be a JSON object, got {type(value).__name__}")
    name, arguments = value.get("name"), value.get("arguments")
    if not isinstance(name, str) or not name:
        return MalformedToolCall(text, "the call has no \"name\" (a string)")
    allowed = None if tools is None else set(tools)
    if allowed is not None and name not in allowed:
        offered = ", ".join(sorted(allowed)) or "none"
        return MalformedToolCall(text, f"unknown tool {name!r} (the tools are: {offered})", name)
    if "arguments" not in value:
        return MalformedToolCall(text, f"the call of {name!r} has no \"arguments\"", name)
    if isinstance(arguments, str):  # OpenAI's spelling: the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    if not isinstance(arguments, dict):
        return MalformedToolCall(text, f"the arguments of {name!r} must be a JSON object, got {arguments!r:.60}", name)
    return ToolCall(name, arguments)


class ToolCallStream:
    """Splits streamed reply text into content and tool calls: feed text as it comes, get events
    ("content", text), ("call", ToolCall) or ("malformed", MalformedToolCall). A call is reported
    once its ``</tool_call>`` has arrived; text that might still become ``<tool_call>`` is held
    back, never emitted half. `flush()` at the end reports a call that was never closed as malformed."""

    def __init__(self, tools: Optional[Iterable[str]] = None):
        self.tools = None if tools is None else list(tools)
        self._buffer = ""
        self._in_call = False
        self._pending_space = ""  # whitespace that is dropped if a call block follows it
        self._after_call = False  # whitespace after a block is dropped too

    def _content(self, text: str, out: list) -> None:
        if self._after_call:
            text = text.lstrip()
            if not text:
                return
            self._after_call = False
        body = text.rstrip()
        if body:
            out.append(("content", self._pending_space + body))
            self._pending_space = ""
        self._pending_space += text[len(body):]

    def feed(self, text: str) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        self._buffer += text
        while True:
            if self._in_call:
                end = self._buffer.find(TOOL_CALL_END)
                if end < 0:
                    return out
                out.append(self._event(parse_call(self._buffer[:end], self.tools)))
                self._buffer = self._buffer[end + len(TOOL_CALL_END):]
                self._in_call, self._after_call, self._pending_space = False, True, ""
                continue
            start = self._buffer.find(TOOL_CALL_START)
            if start >= 0:
                self._content(self._buffer[:start], out)
                self._buffer = self._buffer[start + len(TOOL_CALL_START):]
                self._in_call, self._pending_space = True, ""
                continue
            keep = next((k for k in range(min(len(TOOL_CALL_START) - 1, len(self._buffer)), 0, -1)
                         if self._buffer.endswith(TOOL_CALL_START[:k])), 0)
            self._content(self._buffer[:len(self._buffer) - keep], out)
            self._buffer = self._buffer[len(self._buffer) - keep:]
            return out

    def flush(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self._in_call:
            out.append(("malformed", MalformedToolCall(TOOL_CALL_START + self._buffer,
                                                       f"the call is not closed with {TOOL_CALL_END}")))
        else:
            self._content(self._buffer, out)
            if self._pending_space and not self._after_call:
                out.append(("content", self._pending_space))
        self._buffer, self._in_call, self._pending_space = "", False, ""
        return out

    @staticmethod
    def _event(parsed) -> tuple[str, Any]:
        return ("call", parsed) if isinstance(parsed, ToolCall) else ("malformed", parsed)


def collect(events: Iterable[tuple[str, Any]], into: Optional[ParsedReply] = None) -> ParsedReply:
    """The `ParsedReply` a sequence of `ToolCallStream` events adds up to."""
    reply = into if into is not None else ParsedReply()
    for kind, value in events:
        if kind == "content":
            reply.content += value
        elif kind == "call":
            reply.calls.append(value)
        else:
            reply.malformed.append(value)
    return reply


def parse_tool_calls(text: str, tools: Optional[Iterable[str]] = None) -> ParsedReply:
    """Split a whole reply into content and tool calls (the same as streaming it through
    `ToolCallStream` in any pieces). `tools`: the names that may be called (None: any)."""
    stream = ToolCallStream(tools)
    return collect(stream.feed(text) + stream.flush())


def assistant_message(reply: ParsedReply) -> dict:
    """The assistant message a parsed reply goes back into the history as: its content (with the
    text of malformed calls, so the model sees what it wrote) and its calls in OpenAI's form."""
    content = "\n".join([reply.content] * bool(reply.content) + [bad.text for bad in reply.malformed])
    message: dict = {"role": "assistant", "content": content}
    if reply.calls:
        message["tool_calls"] = [call.openai() for call in reply.calls]
    return message


# ---------------------------------------------------------------------------------------------
# Tool signatures (OpenAI's `tools` entries)

class ToolSchemaError(ValueError):
    """A `tools` entry that is not a function signature; `param` names the field (tools.0.function.name)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


def check_tool_schemas(tools: Any) -> list[dict]:
    """`tools` if it is a list of OpenAI function signatures ``{"type": "function", "function":
    {"name", "description"?, "parameters"?}}`` with distinct names, else ToolSchemaError."""
    if not isinstance(tools, list):
        raise ToolSchemaError("tools", f"must be a list of function signatures, got {type(tools).__name__}")
    names = set()
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise ToolSchemaError(where, f"must be an object, got {type(tool).__name__}")
        if tool.get("type") != "function":
            raise ToolSchemaError(f"{where}.type", f"must be \"function\", got {tool.get('type')!r}")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise ToolSchemaError(f"{where}.function", "must be an object with a name")
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise ToolSchemaError(f"{where}.function.name",
                                  f"must be 1 to 64 letters, digits, _ or -, got {name!r}")
        if name in names:
            raise ToolSchemaError(f"{where}.function.name", f"{name!r} is offered twice")
        names.add(name)
        if "description" in function and not isinstance(function["description"], str):
            raise ToolSchemaError(f"{where}.function.description", "must be a string")
        parameters = function.get("parameters")
        if parameters is not None:
            _check_parameters(parameters, f"{where}.function.parameters")
    return tools


def _check_parameters(parameters, where: str) -> None:
    if not isinstance(parameters, dict):
        raise ToolSchemaError(where, f"must be a JSON Schema object, got {type(parameters).__name__}")
    if parameters.get("type", "object") != "object":
        raise ToolSchemaError(f"{where}.type", f"must be \"object\" (arguments are a JSON object), "
                                               f"got {parameters.get('type')!r}")
    properties = parameters.get("properties", {})
    if not isinstance(properties, dict) or not all(isinstance(v, dict) for v in properties.values()):
        raise ToolSchemaError(f"{where}.properties", "must map each argument's name to its schema (an object)")
    for name, schema in properties.items():
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if kind is not None and not all(k in JSON_TYPES for k in kinds):
            raise ToolSchemaError(f"{where}.properties.{name}.type", f"is not a JSON Schema type: {kind!r}")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ToolSchemaError(f"{where}.required", "must be a list of argument names")


def argument_problem(parameters: Optional[dict], arguments: dict) -> Optional[str]:
    """What is wrong with `arguments` for a JSON Schema `parameters` object (required names
    present, no unknown names, the types of the properties), or None."""
    parameters = parameters or {}
    properties = parameters.get("properties", {})
    missing = [name for name in parameters.get("required", []) if name not in arguments]
    if missing:
        return f"missing argument{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}"
    unknown = [name for name in arguments if name not in properties]
    if unknown and (properties or parameters.get("additionalProperties") is False):
        return f"unknown argument{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} " \
               f"(expected {', '.join(map(repr, properties)) or 'none'})"
    for name, value in arguments.items():
        schema = properties.get(name, {})
        kinds = schema.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
        if kinds and not any(_is_json_type(value, kind) for kind in kinds):
            return f"argument {name!r} must be {' or '.join(kinds)}, got {json.dumps(value, ensure_ascii=False)}"
        if "enum" in schema and value not in schema["enum"]:
            return f"argument {name!r} must be one of {', '.join(map(repr, schema['enum']))}, got {value!r}"
    return None


def _is_json_type(value, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, JSON_TYPES[kind])


# ---------------------------------------------------------------------------------------------
# Running tools

class ToolError(Exception):
    """A tool's own refusal (bad input it can explain): its message goes back to the model."""


@dataclass
class Tool:
    """A callable the model may ask for: `function(**arguments)` returns its result (text, or a
    JSON value written with `tool_json`), or raises ToolError with a message for the model."""

    name: str
    description: str
    parameters: dict
    function: Callable[..., Any]

    def schema(self) -> dict:
        """The signature the chat template writes (OpenAI's `tools` entry)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


class ToolRegistry:
    """The tools on offer, by name: their signatures for the prompt, and `run` for a call."""

    def __init__(self, tools: Sequence[Tool]):
        self.tools = {tool.name: tool for tool in tools}
        if len(self.tools) != len(tools):
            raise ValueError("two tools share a name")
        check_tool_schemas(self.schemas())

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def schemas(self) -> list[dict]:
        return [tool.schema() for tool in self.tools.values()]

    def run(self, call: ToolCall | MalformedToolCall) -> dict:
        """The `tool` message answering `call`: the tool's result, or "error: …" when the call is
        malformed, names no tool here, has wrong arguments, or the tool fails. Never raises."""
        def answer(content: str) -> dict:
            message = {"role": TOOL_ROLE, "content": content}
            if isinstance(call, ToolCall):
                message.update(tool_call_id=call.id, name=call.name)
            return message

        if isinstance(call, MalformedToolCall):
            return answer(f"error: {call.reason}")
        tool = self.tools.get(call.name)
        if tool is None:
            return answer(f"error: unknown tool {call.name!r} (the tools are: {', '.join(self.tools)})")
        problem = argument_problem(tool.parameters, call.arguments)
        if problem is not None:
            return answer(f"error: {call.name}: {problem}")
        try:
            result = tool.function(**call.arguments)
        except ToolError as error:
            return answer(f"error: {error}")
        except Exception as error:  # a tool's bug is reported to the model like any failure
            return answer(f"error: {call.name} failed ({type(error).__name__}: {error})")
        return answer(result if isinstance(result, str) else tool_json(result))

    def respond(self, reply: ParsedReply) -> list[dict]:
        """The tool messages answering every call of a reply, malformed ones included, in order."""
        return [self.run(call) for call in [*reply.calls, *reply.malformed]]


# ---- the calculator ------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64
MAX_MAGNITUDE = 10 ** 30
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
# spellings of the operators in Chinese (and typeset) text; NFKC folds full-width digits and signs
_OPERATOR_SPELLINGS = {"×": "*", "÷": "/", "−": "-", "–": "-", "^": "**", "加": "+", "减": "-", "乘": "*",
                       "除以": "/"}


def calculate(expression: str) -> str:
    """The value of an arithmetic expression: numbers, + - * / // % ** (or ^), parentheses;
    "17×3", "（12＋30）÷7" and "6 乘 7" too. Integers stay exact; other results are written with
    at most 12 significant digits. ToolError says what is wrong with an expression."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("calculator: the expression is empty")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"calculator: the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = unicodedata.normalize("NFKC", expression)
    for spelling, symbol in _OPERATOR_SPELLINGS.items():
        text = text.replace(spelling, symbol)
    text = text.replace(",", "").strip().rstrip("=").strip()  # "1,234" and a trailing "="
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolError(f"calculator: {expression!r} is not an arithmetic expression") from None
    value = _evaluate(tree.body, expression)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError(f"calculator: {expression!r} has no finite value")
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def _evaluate(node, expression: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        if abs(node.value) > MAX_MAGNITUDE:
            raise ToolError(f"calculator: {node.value:.3g} is too large a number")
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, expression))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, expression), _evaluate(node.right, expression)
        if isinstance(node.op, ast.Pow) and (abs(right) > MAX_EXPONENT or abs(left) > MAX_MAGNITUDE):
            raise ToolError(f"calculator: powers are limited to exponents up to {MAX_EXPONENT}")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError(f"calculator: {expression!r} divides by zero") from None
        except OverflowError:
            raise ToolError(f"calculator: the result of {expression!r} is too large") from None
        if isinstance(value, complex):
            raise ToolError(f"calculator: {expression!r} has no real value")
        if abs(value) > MAX_MAGNITUDE:
            raise ToolError(f"calculator: the result of {expression!r} is too large")
        return value
    raise ToolError(f"calculator: {expression!r} is not plain arithmetic (numbers, + - * / // % ** and parentheses)")


def _signature(name: str) -> dict:
    """The signature the book's models are trained with (`minimind.data.synthetic.TOOL_SIGNATURES`)."""
    import copy

    from minimind.data.synthetic import TOOL_SIGNATURES

    return copy.deepcopy(next(tool["function"] for tool in TOOL_SIGNATURES if tool["function"]["name"] == name))


def calculator() -> Tool:
    signature = _signature("calculator")
    return Tool(name="calculator", description=signature["description"], parameters=signature["parameters"],
                function=lambda expression: calculate(expression))


# ---- the directory of the synthetic world ----------------------------------------------------

def lookup_person(seed: int = 0) -> Tool:
    """The facts of one person of the book's synthetic world (`build_world(seed).lookup`): name, age,
    city, job, pet, favourite colour, in English or Chinese (`lang`), all or one (`attribute`)."""
    from minimind.data.synthetic import build_world

    def look_up(name: str, attribute: Optional[str] = None, lang: str = "en") -> dict:
        try:
            return build_world(seed).lookup(name, attribute, lang)
        except LookupError as error:
            raise ToolError(f"lookup_person: {error}") from None

    signature = _signature("lookup_person")
    return Tool(name="lookup_person", description=signature["description"], parameters=signature["parameters"],
                function=look_up)


def default_registry(seed: int = 0) -> ToolRegistry:
    """The book's tools: `calculator` and `lookup_person` (over `build_world(seed)`)."""
    return ToolRegistry([calculator(), lookup_person(seed)])
