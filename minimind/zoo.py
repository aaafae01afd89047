"""The book's trained artefacts: one registry of recipes, each built deterministically the first
time it is asked for and reused afterwards.

    zoo.path("sft")          # the folder of the SFT chat model (trained, with what it starts from, on first use)
    zoo.load("sft")          # the model in it (CPU, eval mode); zoo.sft() says the same
    zoo.config("sft")        # the stage config its recipe runs (change fields to run a variation)
    zoo.metrics("sft")       # its training records

`RECIPES` names every artefact: the tokenizer, the pretrained model, the SFT model and its
every-token ablation, the DPO model, the identity and tea-house LoRA adapters (and the tea house
taught by plain LoRA and by full fine-tuning, for comparison), the reasoning model (and its
answer-only twin), the RL model and the distillation teacher. A recipe is a training stage's
`run(config)` with the stage's own defaults (plus the recipe's few settings), on synthetic datasets, starting from other
artefacts, whose folders it passes as explicit paths (`init_from`, `tokenizer`): the stages know
nothing of the zoo. Any chapter can ask for what it needs, whether or not an earlier chapter ran.

Each artefact is a folder ``cache_dir()/<name>`` (``.cache/minimind`` in a checkout,
``MINIMIND_CACHE`` to move it) holding one sub-folder per version: its files, the training
metrics (``metrics.jsonl``, so a chapter can plot the curve either way) and ``artefact.json``
with a fingerprint of everything it was built from: the code, the training config, the data
file's digest and the fingerprints of the artefacts it started from. A different fingerprint
builds a new version. Builds hold a file lock (two processes never build the same artefact at
once), write into a temporary folder and publish it with a rename, so a killed build leaves
nothing half-made behind. They are silent and seeded, and keep no resume file (it is for
continuing a run, not part of an artefact).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Union

from minimind.paths import cache_dir
from minimind.runtime import replica_seed
from minimind.train.tokenizer import BOOK_CORPUS

MARKER_FILE = "artefact.json"
# Bump when the code that builds the artefacts changes in a way their configs do not show.
ZOO_VERSION = 1


# ---------------------------------------------------------------------------------------------
# The generic cache


def file_digest(path) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artefact_key(directory) -> str:
    """The fingerprint hash recorded in an artefact folder (for the fingerprints of its children)."""
    return json.loads((Path(directory) / MARKER_FILE).read_text(encoding="utf-8"))["key"]


# The modules whose code decides what a training run produces; an edit to any of them rebuilds.
TRAINING_CODE = ("minimind.config", "minimind.model", "minimind.tokenizer", "minimind.losses", "minimind.runtime",
                 "minimind.data.datasets", "minimind.train.config", "minimind.train.stage", "minimind.train.loop",
                 "minimind.train.state")


def code_digest(modules: Iterable[str]) -> str:
    """sha256 over the code of `modules` (imported by name): their syntax trees without
    docstrings, so editing a comment or a docstring does not rebuild anything."""
    import ast
    import importlib

    digest = hashlib.sha256()
    for name in modules:
        tree = ast.parse(Path(importlib.import_module(name).__file__).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(name.encode() + ast.dump(tree).encode())
    return digest.hexdigest()


def fingerprint(config=None, data: Iterable = (), parents: Iterable = (), code: Iterable[str] = (),
                training_code: bool = True, **extra) -> dict:
    """What an artefact depends on: a config (a dataclass; paths and logging switches are left out,
    they do not change the result), digests of data files, the keys of parent artefacts, and a
    digest of the code that builds it (`TRAINING_CODE` unless `training_code=False`, plus `code`)."""
    values = dataclasses.asdict(config) if config is not None else {}
    for irrelevant in ("out_dir", "metrics_file", "progress", "init_from", "tokenizer", "data_path", "resume",
                       "overwrite", "report_to"):
        values.pop(irrelevant, None)
    return {
        "zoo_version": ZOO_VERSION,
        "config": values,
        "data": [file_digest(path) for path in data],
        "parents": [artefact_key(parent) for parent in parents],
        "code": code_digest([*(TRAINING_CODE if training_code else ()), *code]),
        **extra,
    }


def _key_of(print_: dict) -> str:
    return hashlib.sha256(json.dumps(print_, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_current(directory: Path, key: str) -> bool:
    try:
        return artefact_key(directory) == key
    except (OSError, ValueError, KeyError):
        return False


@contextmanager
def _locked(lock_path: Path):
    """An exclusive advisory lock on `lock_path` (POSIX; elsewhere builds are not serialised)."""
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; a second concurrent build would only redo work
        yield
        return
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _build_threads():
    """Builds use `runtime.cpu_threads()`: every core, or one under `make test` (one chapter per core)."""
    import torch

    from minimind.runtime import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def get_or_build(name: str, build: Callable[[Path], object], fingerprint: dict) -> Path:
    """The folder of artefact `name` for this fingerprint, built by `build(folder)` unless cached.

    Each fingerprint gets its own folder, ``cache_dir()/name/<key>``, so a path once returned
    never changes under its user, even while a process running other code builds another
    version. The newest `KEEP_VERSIONS` versions are kept. The build runs on `runtime.cpu_threads()` threads (see
    `_build_threads`), under a file lock, into a staging folder renamed into place when it finished.
    """
    folder = cache_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    key = _key_of(fingerprint)
    target = folder / key
    if _is_current(target, key):
        return target
    with _locked(folder / ".lock"):
        if _is_current(target, key):  # another process built it while we waited
            return target
        for stale in folder.glob(".*.building"):  # left by a build that was killed (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".building", dir=folder))
        try:
            with _build_threads():
                build(staging)
            (staging / MARKER_FILE).write_text(
                json.dumps({"name": name, "key": key, "fingerprint": fingerprint}, indent=2, default=str) + "\n",
                encoding="utf-8")
            if target.exists():  # a version without its marker: left by a crash, never published
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _prune(folder)
    return target


KEEP_VERSIONS = 3


def _prune(folder: Path) -> None:
    versions = sorted((p for p in folder.iterdir() if (p / MARKER_FILE).exists()),
                      key=lambda p: (p / MARKER_FILE).stat().st_mtime, reverse=True)
    for old in versions[KEEP_VERSIONS:]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The book's artefacts


@dataclass(frozen=True)
class Recipe:
    """How the book builds one artefact: `stage.run(config)` on a synthetic dataset, starting from
    other artefacts."""

    stage: str  # the stage module, e.g. "minimind.train.sft"
    config: str  # the stage's config class (or factory) in that module, e.g. "SFTConfig"
    data: Union[str, tuple]  # the synthetic dataset(s) it trains on (their train splits, concatenated; () for none)
    inputs: dict = field(default_factory=dict)  # config field → the artefact whose folder it gets
    settings: dict = field(default_factory=dict)  # the recipe's own settings over the stage's defaults
    code: tuple = ()  # further modules whose code decides the result (the stage's always counts)
    kind: str = "model"  # "model", "adapter" (a LoRA adapter on its init_from artefact) or "tokenizer"
    # dataset → share: round(share × rows of `data`) rows of that dataset's train split mixed in, drawn
    # with a fixed seed, so that a fine-tune keeps rehearsing what its parent could do (`write_mixture`)
    replay: dict = field(default_factory=dict)
    # config field → datasets whose train splits' paths it gets, comma-separated (e.g. the corpora a
    # base model was trained on, for LoRA's `base_corpora`); their digests enter the fingerprint
    corpora: dict = field(default_factory=dict)

    def stage_config(self, **changes):
        """The config this recipe runs, with `changes` (e.g. `max_steps=50`) applied."""
        factory = getattr(importlib.import_module(self.stage), self.config)
        return dataclasses.replace(factory(**self.settings), **changes)


_SILENT = {"progress": False}
_TEA_DATA = ("lora_domain", "lora_domain_phrasings")
_TEA_SETTINGS = {**_SILENT, "lora_name": "domain", "lora_dropout": 0.0, "max_steps": 1280}
_RL = {**_SILENT, "lr": 2e-4, "warmup_steps": 10, "max_steps": 100, "max_new_tokens": 64, "kl_coef": 0.05}
RECIPES: dict[str, Recipe] = {
    "tokenizer": Recipe("minimind.train.tokenizer", "book_config", BOOK_CORPUS, kind="tokenizer",
                        code=("minimind.tokenizer", "minimind.data.jsonl")),
    "pretrained": Recipe("minimind.train.pretrain", "PretrainConfig", "pretrain", {"tokenizer": "tokenizer"}, _SILENT),
    "sft": Recipe("minimind.train.sft", "SFTConfig", "sft", {"init_from": "pretrained"}, _SILENT),
    # chapter 5's ablation: the same SFT run with the loss on every token, prompts included
    "sft_all_tokens": Recipe("minimind.train.sft", "SFTConfig", "sft", {"init_from": "pretrained"},
                             {**_SILENT, "supervise_all": True}),
    "dpo": Recipe("minimind.train.dpo", "DPOConfig", "dpo", {"init_from": "sft"}, _SILENT),
    "lora_identity": Recipe("minimind.train.lora", "LoRAConfig", "lora_identity", {"init_from": "sft"},
                            {**_SILENT, "lora_name": "identity"}, code=("minimind.lora",), kind="adapter"),
    # the tea house: LoRA on its questions asked nine ways per attribute (two in the tokenizer's
    # corpus, seven more beside them). Its words (tea names, flavours, and "price", "steep", "茶", …)
    # occur in no text the SFT model learnt from, so those embedding rows were never trained and
    # the frozen model reads them all alike: the adapter trains the rows of every token its data
    # holds and the base model's corpora do not. A third as many SFT rows replayed keep it answering
    # ordinary questions; no dropout (it learns 240 facts by heart).
    "lora_domain": Recipe("minimind.train.lora", "LoRAConfig", _TEA_DATA, {"init_from": "sft"},
                          _TEA_SETTINGS, code=("minimind.lora",), kind="adapter", replay={"sft": 1 / 3},
                          corpora={"base_corpora": ("pretrain", "sft")}),
    # chapter 7's comparison, the same data and steps: LoRA without the new rows, and full fine-tuning
    "lora_domain_plain": Recipe("minimind.train.lora", "LoRAConfig", _TEA_DATA, {"init_from": "sft"},
                                _TEA_SETTINGS, code=("minimind.lora",), kind="adapter", replay={"sft": 1 / 3}),
    "domain_full": Recipe("minimind.train.sft", "SFTConfig", _TEA_DATA, {"init_from": "sft"},
                          {**_SILENT, "max_steps": _TEA_SETTINGS["max_steps"], "batch_size": 16, "warmup_steps": 5},
                          replay={"sft": 1 / 3}),
    "reasoning": Recipe("minimind.train.reason", "ReasonConfig", "reason", {"init_from": "sft"}, _SILENT),
    # chapter 8's comparison: the same run on the same problems answered without the working
    "reasoning_direct": Recipe("minimind.train.reason", "ReasonConfig", "reason_direct", {"init_from": "sft"}, _SILENT),
    # the distillation teacher: the SFT chat model fine-tuned a little longer on the distillation
    # conversations, so it knows every kind of reply they hold
    # chapter 12: RL with a verifier from the reasoning model, on problems given with answers only
    # (the world's "rl" split, drawn by the stage itself: no data file)
    "rl": Recipe("minimind.train.rl", "RLConfig", (), {"init_from": "reasoning"}, _RL,
                 code=("minimind.data.synthetic", "minimind.scoring", "minimind.generate")),
    # the same run under two more seeds (other prompts order and samples): how far RL's effect moves
    **{f"rl_seed{seed}": Recipe("minimind.train.rl", "RLConfig", (), {"init_from": "reasoning"},
                                {**_RL, "seed": replica_seed(seed)},
                                code=("minimind.data.synthetic", "minimind.scoring", "minimind.generate"))
       for seed in (43, 44)},
    "distill_teacher": Recipe("minimind.train.sft", "SFTConfig", "distill", {"init_from": "sft"},
                              {**_SILENT, "max_steps": 200, "lr": 3e-4}),
    # chapter 10's speculative decoding: a two-block draft for the reasoning model (`--draft
    # reasoning_draft`), started from its first two blocks, embedding and head, then distilled on
    # the reasoning data to match its next-token distribution (KL only, T = 1: a proposal is kept
    # where the draft's choice is the target's)
    "reasoning_draft": Recipe("minimind.train.distill", "DistillConfig", "reason", {"teacher": "reasoning"},
                              {**_SILENT, "student_layers": "0,1", "alpha": 0.0, "temperature": 1.0,
                               "max_steps": 300}),
}
CHAT_MODELS = ("pretrained", "sft", "dpo", "reasoning", "rl")  # the artefacts one talks to (`minimind chat --model sft`)


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"no zoo artefact {name!r}; the zoo has {', '.join(RECIPES)}")
    return RECIPES[name]


def config(name: str, **changes):
    """The stage config artefact `name` is trained with (its paths filled in at build time)."""
    return recipe(name).stage_config(**changes)


def _data_file(name: str) -> Path:
    from minimind.data.synthetic import dataset_path

    return Path(dataset_path(name, "train"))


MIXTURE_FILE = "train_mixture.jsonl"


def write_mixture(out: Path, files: Iterable, replay: dict, seed: int = 0) -> Path:
    """Write the rows of `files`, plus round(share × their count) rows of each `replay` file (path →
    share, drawn without replacement), shuffled, to `out`: the exact file a recipe trained on."""
    import random

    def rows_of(path) -> list[str]:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

    rows = [row for path in files for row in rows_of(path)]
    rng = random.Random(seed)
    mixed = list(rows)
    for path, share in replay.items():
        pool = rows_of(path)
        count = round(share * len(rows))
        if not 0 <= count <= len(pool):
            raise ValueError(f"{path}: replaying {share} × {len(rows)} rows needs {count}, the file holds {len(pool)}")
        mixed += rng.sample(pool, count)
    rng.shuffle(mixed)
    from minimind.files import atomic_save_bytes

    atomic_save_bytes(out, ("\n".join(mixed) + "\n").encode("utf-8"))
    return out


def path(name: str) -> Path:
    """The folder of artefact `name`, built on first use (and the artefacts it starts from first)."""
    spec = recipe(name)
    stage_config = spec.stage_config()
    data = [_data_file(dataset) for dataset in ((spec.data,) if isinstance(spec.data, str) else spec.data)]
    replay = {_data_file(dataset): share for dataset, share in spec.replay.items()}
    corpora = {key: [_data_file(dataset) for dataset in datasets] for key, datasets in spec.corpora.items()}
    parents = {field_name: path(parent) for field_name, parent in spec.inputs.items()}

    def build(out: Path):
        if spec.kind != "tokenizer" and (len(data) > 1 or replay):
            paths = {"data_path": str(write_mixture(out / MIXTURE_FILE, data, replay))}
        else:
            paths = ({"data": tuple(map(str, data))} if spec.kind == "tokenizer" else
                     {"data_path": str(data[0])} if data else {})  # no data file: the stage draws from the world
        run = importlib.import_module(spec.stage).run
        paths.update({key: ",".join(map(str, files)) for key, files in corpora.items()})
        run(dataclasses.replace(stage_config, out_dir=str(out), **paths,
                                **{key: str(folder) for key, folder in parents.items()}))
        from minimind.train.state import RESUME_FILE

        (out / RESUME_FILE).unlink(missing_ok=True)

    # a replay or corpora enter the fingerprint only where there are some: the others keep their keys
    extra = {"replay": {dataset: share for dataset, share in spec.replay.items()}} if spec.replay else {}
    if spec.corpora:
        extra["corpora"] = {key: list(datasets) for key, datasets in spec.corpora.items()}
    corpus_files = [file for files in corpora.values() for file in files]
    print_ = fingerprint(stage_config, data=[*data, *replay, *corpus_files], parents=list(parents.values()),
                         code=[spec.stage, *spec.code], training_code=spec.kind != "tokenizer", **extra)
    return get_or_build(name, build, print_)


def _folder(name_or_folder: Union[str, Path]) -> Path:
    if isinstance(name_or_folder, str) and name_or_folder in RECIPES:
        return path(name_or_folder)
    return Path(name_or_folder)


def load(name_or_folder: Union[str, Path]):
    """Artefact `name` (a `MiniMindTokenizer` for "tokenizer"; an adapter's base model with the
    adapter loaded and active), or the model saved in an artefact folder: on CPU, in eval mode."""
    from minimind.checkpoint import load_model

    if isinstance(name_or_folder, str) and name_or_folder in RECIPES:
        spec, folder = RECIPES[name_or_folder], path(name_or_folder)
        if spec.kind == "tokenizer":
            from minimind.tokenizer import MiniMindTokenizer

            return MiniMindTokenizer.from_pretrained(folder)
        if spec.kind == "adapter":
            from minimind.lora import load_lora

            model = load(spec.inputs["init_from"])
            load_lora(model, folder)
            return model.eval()
        return load_model(folder)
    return load_model(name_or_folder)


def metrics(name_or_folder: Union[str, Path]) -> list[dict]:
    """The training records saved with an artefact (`metrics.jsonl`), by name or folder."""
    from minimind.train.metrics import read_metrics

    return read_metrics(_folder(name_or_folder) / "metrics.jsonl")


def tokenizer():
    """The book's tokenizer: `load("tokenizer")`."""
    return load("tokenizer")


def pretrained():
    """The pretrained chapter model: `load("pretrained")`."""
    return load("pretrained")


def sft():
    """The SFT chat model: `load("sft")`."""
    return load("sft")


# ---------------------------------------------------------------------------------------------
# Building many at once: `minimind zoo build --jobs 2` (what `make test` does before the chapters)


def requirements(names: Iterable[str]) -> list[str]:
    """`names` and every artefact they start from, parents before children (in RECIPES order)."""
    wanted: set[str] = set()

    def visit(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for parent in recipe(name).inputs.values():
                visit(parent)

    for name in names:
        visit(name)
    return [name for name in RECIPES if name in wanted]


def _descendants(name: str) -> int:
    children = [child for child, spec in RECIPES.items() if name in spec.inputs.values()]
    return len(children) + sum(_descendants(child) for child in children)


def build_many(names: Iterable[str] = (), jobs: int = 1, log: Callable[[str], None] = print) -> None:
    """Build `names` (default: every artefact) and what they start from, `jobs` builds at a time,
    each in a process of its own on `runtime.cpu_threads()` threads; an artefact starts once its
    parents are built, the one with most artefacts waiting on it first. A failed build stops the
    rest and raises, naming it."""
    import subprocess
    import sys
    import time

    order = requirements(names or RECIPES)
    done: set[str] = set()
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    while len(done) < len(order):
        ready = [n for n in order if n not in done and n not in running
                 and all(parent in done for parent in recipe(n).inputs.values())]
        ready.sort(key=lambda n: -_descendants(n))  # stable: RECIPES order among equals
        while ready and len(running) < max(jobs, 1):
            name = ready.pop(0)
            command = [sys.executable, "-c", f"from minimind import zoo; zoo.path({name!r})"]
            running[name] = (subprocess.Popen(command), time.monotonic())
        time.sleep(0.2)
        for name, (process, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[name]
            if process.returncode != 0:
                for other, _ in running.values():
                    other.terminate()
                raise RuntimeError(f"building zoo artefact {name!r} failed (exit code {process.returncode}); "
                                   f"rerun `python -c \"from minimind import zoo; zoo.path({name!r})\"` to see why")
            done.add(name)
            log(f"zoo: {name} ready ({time.monotonic() - started:.0f} s; {len(done)}/{len(order)})")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="minimind zoo", description="Build the book's artefacts ahead of the chapters.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build artefacts (default: all) and what they start from")
    build.add_argument("names", nargs="*", metavar="NAME", help=f"artefacts to build: {', '.join(RECIPES)}")
    build.add_argument("--jobs", type=int, default=1, help="builds at a time, one process each (default 1)")
    commands.add_parser("list", help="every artefact and what it starts from")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, spec in RECIPES.items():
            print(f"{name:<18} {spec.stage:<24} from {', '.join(spec.inputs.values()) or '-'}")
        return 0
    for name in args.names:
        recipe(name)  # an unknown name fails before anything is built
    build_many(args.names, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    from minimind.commandline import run_main

    raise SystemExit(run_main("python -m minimind.zoo", main))
