"""The lm-evaluation-harness adapter: a MiniMind checkpoint as lm-eval's model "minimind".

Importing this module registers `MiniMindLM` under the name "minimind" in lm-eval's model
registry, so any lm-eval task (C-Eval, CMMLU, ARC, PIQA, HellaSwag, a local YAML) runs on our
model, tokenizer and KV-cache generation:

    python -m minimind.eval.harness --model minimind --model_args path=CKPT --tasks ceval-valid,cmmlu,arc_easy
    minimind eval --model CKPT --lm_eval_tasks ceval-valid,cmmlu,arc_easy --out results.json
    import minimind.eval.harness, lm_eval; lm_eval.simple_evaluate(model="minimind", model_args={"path": CKPT}, tasks=[...])

How lm-eval finds it: lm-eval 0.4.13 (the pinned version) resolves `--model NAME` in its own
registry only. It has no plugin discovery for models outside its source tree: no entry-point
group, and `--include_path` adds task folders, not Python modules. So the plain `lm_eval
--model minimind …` command cannot see the adapter; `python -m minimind.eval.harness ARGS` is
that same command line (lm-eval's own CLI, every option) run after the import registers
"minimind". model_args: path (checkpoint folder, `.pth`, transformers folder or zoo name;
default sft), tokenizer, preset, dtype (float32 by default), max_length, max_gen_toks; the batch
size and the device come from lm-eval's own --batch_size and --device.

What each request type computes, exactly as lm-eval's own HF backend does (tests/test_eval_harness.py
checks per-request log-likelihoods to 1e-4 and generations for equality on the transformers
export of the same weights):
- loglikelihood: context + continuation in one forward pass (left-truncated to max_length + 1),
  log-softmax in fp32 over the continuation positions only (`logits_at`), summed; is_greedy
  when every continuation token is the argmax. Batched longest first, right-padded.
- loglikelihood_rolling: lm-eval's disjoint rolling windows (the first one conditioned on
  `<|im_start|>`), each scored as above, summed per document.
- generate_until: greedy (or sampled, when a task asks) batched decoding with the package's
  preallocated KV cache (`minimind.generate.generate_batch`), left-padded; a row ends at
  `<|im_end|>` or once its text holds a stop string, and the text is cut at the first one.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from minimind.tokenizer import BOS_ID, EOS_ID, PAD_ID

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256  # what lm-eval's HF backend generates when a task does not say
# generation options a task may set that map onto SamplingParams (lm-eval's names → ours)
_SAMPLING_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                     "repetition_penalty": "repetition_penalty", "seed": "seed"}


class LMEvalTaskError(ValueError):
    """A requested lm-eval task is unknown, or cannot be built (e.g. its dataset needs the network)."""


def _batch_size(value) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"batch_size must be a whole number (the minimind model has no 'auto'), got {value!r}") from None
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    return size


@register_model("minimind")
class MiniMindLM(TemplateLM):
    """lm-eval's view of a MiniMind: give a checkpoint `path` (loaded as `minimind chat` loads it),
    or an already loaded `model` and `tokenizer`."""

    def __init__(self, path: str = "sft", tokenizer=None, preset: Optional[str] = None, device: Optional[str] = None,
                 dtype: str = "float32", batch_size=DEFAULT_BATCH_SIZE, max_length: Optional[int] = None,
                 max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, model=None):
        super().__init__()
        self._source = str(path) if model is None else "memory"
        if model is None:
            from minimind.inference import load_chat_model

            if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
                # lm-eval's CLI asks for cuda:0 unless told otherwise; its HF backend then uses what
                # there is, and so do we
                logging.getLogger(__name__).warning("device %s: CUDA is not available, using the default device", device)
                device = None
            model, tokenizer = load_chat_model(path, tokenizer, (), preset, device or "auto", dtype)
        elif tokenizer is None or isinstance(tokenizer, (str, Path)):
            raise ValueError("a model given as an object needs its tokenizer object too")
        self.network = model.eval()
        self.tokenizer = tokenizer
        self._device = next(model.parameters()).device
        self._batch_size = _batch_size(batch_size)
        self._max_length = int(max_length) if max_length else model.config.max_position_embeddings
        if self._max_length > model.config.max_position_embeddings:
            raise ValueError(f"max_length {self._max_length} exceeds the model's max_position_embeddings "
                             f"{model.config.max_position_embeddings}")
        self._max_gen_toks = int(max_gen_toks)

    # -- what lm-eval asks of a model ------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return EOS_ID

    @property
    def prefix_token_id(self) -> int:
        # what an empty context is conditioned on: <|im_start|>, which starts every pretraining
        # document (lm-eval's HF backend also prefers the tokenizer's BOS)
        return BOS_ID

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self):
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.source.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> list[int]:
        # our tokenizer never adds BOS/EOS, whatever add_special_tokens says (as the HF export)
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def chat_template(self, chat_template=False) -> Optional[str]:
        from minimind.tokenizer import CHAT_TEMPLATES

        return CHAT_TEMPLATES[self.tokenizer.chat_template] if chat_template else None

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def get_model_info(self) -> dict:
        return {"model_num_parameters": self.network.num_parameters(),
                "model_dtype": str(next(self.network.parameters()).dtype).removeprefix("torch."),
                "model_path": self._source}

    # -- log-likelihoods ---------------------------------------------------------------------------
    @torch.inference_mode()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(log p(continuation | context), is_greedy) for each (cache key, context ids, continuation ids)."""
        rows = []
        for _, context, continuation in requests:
            if not continuation:
                raise ValueError("lm-eval sent an empty continuation to score")
            if len(continuation) > self.max_length:
                raise ValueError(f"a continuation of {len(continuation)} tokens does not fit max_length {self.max_length}")
            rows.append(((context + continuation)[-(self.max_length + 1):][:-1], continuation))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        results: list[Optional[tuple[float, bool]]] = [None] * len(rows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = len(rows[chunk[0]][0])
            input_ids = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
            scored_at = torch.zeros((len(chunk), width), dtype=torch.bool)
            targets = []
            for row, i in enumerate(chunk):
                window, continuation = rows[i]
                input_ids[row, :len(window)] = torch.tensor(window)
                scored_at[row, len(window) - len(continuation):len(window)] = True
                targets += continuation
            logits = self.network(input_ids.to(self.device), logits_at=scored_at.to(self.device)).logits
            logprobs = logits.float().log_softmax(dim=-1)  # (scored tokens, vocab), row-major
            targets = torch.tensor(targets, device=self.device)
            token_logprobs = logprobs.gather(1, targets[:, None]).squeeze(1)
            greedy = logprobs.argmax(dim=-1) == targets
            lengths = [len(rows[i][1]) for i in chunk]
            for i, part, hits in zip(chunk, token_logprobs.split(lengths), greedy.split(lengths)):
                results[i] = (float(part.sum()), bool(hits.all()))
                if requests[i][0] is not None:  # rolling windows carry no key: cached per document instead
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owners = [], []
        for index, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # -- generation ----------------------------------------------------------------------------------
    def _sampling_params(self, gen_kwargs: dict):
        """lm-eval's generation options → (SamplingParams, stop strings)."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

        from minimind.generate import SamplingParams

        options = dict(normalize_gen_kwargs(gen_kwargs, self.max_gen_toks))
        until = handle_stop_sequences(options.pop("until", None), eos=self.tok_decode([EOS_ID], skip_special_tokens=False))
        max_new_tokens = options.pop("max_gen_toks")
        do_sample = options.pop("do_sample")
        fields = {ours: options.pop(theirs) for theirs, ours in _SAMPLING_OPTIONS.items() if theirs in options}
        if options:
            raise ValueError(f"generation options the minimind model does not support: {sorted(options)}")
        if not do_sample:
            fields["temperature"] = 0.0
        if max_new_tokens >= self.max_length:
            raise ValueError(f"max_gen_toks {max_new_tokens} leaves no room for a prompt in max_length {self.max_length}")
        return SamplingParams(max_new_tokens=max_new_tokens, stop_token_ids=(EOS_ID,), **fields), until

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from lm_eval.models.utils import postprocess_generated_text

        from minimind.generate import generate_batch

        groups: dict[str, list[int]] = {}  # requests with the same options decode together
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(index)
        results: list[Optional[str]] = [None] * len(requests)
        for indices in groups.values():
            params, until = self._sampling_params(requests[indices[0]].args[1])
            room = self.max_length - params.max_new_tokens  # prompts are cut from the left to fit
            prompts = {i: (self.tok_encode(requests[i].args[0]) or [self.prefix_token_id])[-room:] for i in indices}
            order = sorted(indices, key=lambda i: -len(prompts[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]

                def holds_stop(row: int, new_ids: list[int]) -> bool:
                    text = self.tok_decode(new_ids)
                    return any(stop and stop in text for stop in until)

                outputs = generate_batch(self.network, [prompts[i] for i in chunk], params, stop_when=holds_stop)
                for i, ids in zip(chunk, outputs):
                    results[i] = postprocess_generated_text(self.tok_decode(ids), until, think_end_token=None)
                    self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
        return results


# ---------------------------------------------------------------------------------------------
# Running tasks (what `minimind eval --lm_eval_tasks` calls).

def task_manager(names: Sequence[str], include_path=None):
    """lm-eval's task index for `names`: the tasks of `include_path` alone when they hold every
    name (indexing lm-eval's ~14,000 built-in task files takes tens of seconds), else the
    built-in tasks together with `include_path`."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not Path(include_path).is_dir():
            raise LMEvalTaskError(f"{include_path}: no such task folder")
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(local.match_tasks([name]) for name in names):
            return local
    return TaskManager(include_path=str(include_path) if include_path is not None else None)


def load_tasks(names: Sequence[str], manager) -> list:
    """The task (or group) objects for `names`, each built now, so that an unknown name or a
    dataset that cannot be fetched fails before any model is run, naming the task."""
    loaded = []
    for name in names:
        matches = manager.match_tasks([name])
        if not matches:
            raise LMEvalTaskError(f"unknown lm-eval task {name!r} (`python -m minimind.eval.harness ls tasks` lists them)")
        for match in matches:
            try:
                built = manager.load(match)
            except ConnectionError as error:  # what `datasets` raises offline or with HF_DATASETS_OFFLINE=1
                raise LMEvalTaskError(f"lm-eval task {match!r} needs its dataset from the Hugging Face Hub, which "
                                      f"cannot be reached from here ({str(error).splitlines()[0]}); run it on a "
                                      "connected machine once (the dataset is then cached) or ship a local copy") from None
            except Exception as error:  # a broken YAML, a missing split, a task needing remote code …
                first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
                raise LMEvalTaskError(f"lm-eval task {match!r} could not be built: {first_line}") from None
            if match in built["groups"]:
                loaded.append(built["groups"][match])
            elif match in built["tasks"]:
                loaded.append(built["tasks"][match])
            else:  # a tag names a set of tasks
                loaded += list(built["tasks"].values())
    return loaded


def evaluate_tasks(lm: MiniMindLM, tasks: list, manager, limit: Optional[int] = None,
                   num_fewshot: Optional[int] = None, log_samples: bool = False) -> dict:
    """lm-eval's `simple_evaluate` on already loaded `tasks`; returns its results dict."""
    import lm_eval

    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                                   log_samples=log_samples)


def main(argv=None) -> int:
    """lm-eval's own command line, with the "minimind" model registered (see the module docstring)."""
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *(sys.argv[1:] if argv is None else argv)]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
