"""The book's trained artefacts, built deterministically the first time and reused afterwards.

Any chapter can ask for what it needs — `tokenizer()`, `pretrained()`, `sft()`, and the later
stages' artefacts, which their own modules add with :func:`get_or_build` — whether or not an
earlier chapter ran. Each artefact is a folder ``cache_dir()/<name>`` (``.cache/minimind`` in a
checkout, ``MINIMIND_CACHE`` to move it) holding one sub-folder per version: its files, the
training metrics (``metrics.jsonl``, so a chapter can plot the curve either way) and
``artefact.json`` with a fingerprint of everything it was built from: the code, the training
config, the data file's digest and the fingerprints of the artefacts it started from. A
different fingerprint builds a new version. Builds hold a file lock (two processes never build the same artefact at
once), write into a temporary folder and publish it with a rename, so a killed build leaves
nothing half-made behind. They are silent and seeded.

A later stage adds its artefact like this (in its own module)::

    def dpo_dir() -> Path:
        data, base = dataset_path("dpo", "train"), zoo.sft_dir()
        config = DPOConfig(progress=False)
        def build(out):
            run(replace(config, out_dir=str(out), init_from=str(base), data_path=str(data)))
        print_ = zoo.fingerprint(config, data=[data], parents=[base], code=["minimind.train.dpo"])
        return zoo.get_or_build("dpo", build, print_)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from minimind.paths import cache_dir

MARKER_FILE = "artefact.json"
# Bump when the code that builds the artefacts changes in a way their configs do not show.
ZOO_VERSION = 1
TOKENIZER_VOCAB_SIZE = 2048


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
TRAINING_CODE = ("minimind.config", "minimind.model", "minimind.tokenizer", "minimind.losses",
                 "minimind.data.datasets", "minimind.train.engine")


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
def _one_thread():
    """Builds run on one CPU thread, whatever the core count: `make test` runs one chapter per core,
    and an artefact then does not depend on how many cores the machine that built it had."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def get_or_build(name: str, build: Callable[[Path], object], fingerprint: dict) -> Path:
    """The folder of artefact `name` for this fingerprint, built by `build(folder)` unless cached.

    Each fingerprint gets its own folder, ``cache_dir()/name/<key>``, so a path once returned
    never changes under its user, even while a process running other code builds another
    version. The newest `KEEP_VERSIONS` versions are kept. The build runs on one thread (see
    `_one_thread`), under a file lock, into a staging folder renamed into place when it finished.
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
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".building", dir=folder))
        try:
            with _one_thread():
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


def metrics(directory) -> list[dict]:
    """The training metrics saved with an artefact (records of `metrics.jsonl`)."""
    from minimind.train.metrics import read_metrics

    return read_metrics(Path(directory) / "metrics.jsonl")


def load(directory):
    """The model saved in an artefact folder, on CPU, in eval mode."""
    from minimind.checkpoint import load_model

    return load_model(directory)


# ---------------------------------------------------------------------------------------------
# The artefacts of chapters 1-4


def _synthetic(name: str, split: str = "train") -> Path:
    from minimind.data.synthetic import dataset_path

    return Path(dataset_path(name, split))


def tokenizer_dir() -> Path:
    """Byte-level BPE (vocab 2048) trained on the synthetic pretraining corpus."""
    from minimind.data.jsonl import texts_from_jsonl
    from minimind.tokenizer import train_tokenizer

    data = _synthetic("pretrain")

    def build(out: Path):
        train_tokenizer(texts_from_jsonl(data), vocab_size=TOKENIZER_VOCAB_SIZE).save(out)

    print_ = fingerprint(data=[data], code=["minimind.tokenizer"], training_code=False, vocab_size=TOKENIZER_VOCAB_SIZE)
    return get_or_build("tokenizer", build, print_)


def tokenizer():
    """The book's tokenizer (a `MiniMindTokenizer`)."""
    from minimind.tokenizer import MiniMindTokenizer

    return MiniMindTokenizer.from_pretrained(tokenizer_dir())


def pretrain_config(**changes):
    """The config of the book's pretrained model: `PretrainConfig`'s defaults, silent."""
    from minimind.train.pretrain import PretrainConfig

    return dataclasses.replace(PretrainConfig(progress=False), **changes)


def pretrained_dir() -> Path:
    """The `book` preset pretrained on the synthetic corpus (`python -m minimind.train.pretrain`'s run)."""
    from minimind.train.pretrain import run

    data, tokenizer_folder = _synthetic("pretrain"), tokenizer_dir()
    config = pretrain_config()

    def build(out: Path):
        run(dataclasses.replace(config, out_dir=str(out), tokenizer=str(tokenizer_folder), data_path=str(data)))
        _drop_resume_file(out)

    return get_or_build("pretrained", build, fingerprint(config, data=[data], parents=[tokenizer_folder],
                                                             code=["minimind.train.pretrain"]))


def pretrained():
    """The pretrained chapter model (CPU, eval mode)."""
    return load(pretrained_dir())


def sft_config(**changes):
    """The config of the book's SFT model: `SFTConfig`'s defaults, silent."""
    from minimind.train.sft import SFTConfig

    return dataclasses.replace(SFTConfig(progress=False), **changes)


def _sft_artefact(name: str, config) -> Path:
    from minimind.train.sft import run

    data, base = _synthetic("sft"), pretrained_dir()

    def build(out: Path):
        run(dataclasses.replace(config, out_dir=str(out), init_from=str(base), data_path=str(data)))
        _drop_resume_file(out)

    return get_or_build(name, build, fingerprint(config, data=[data], parents=[base], code=["minimind.train.sft"]))


def sft_dir() -> Path:
    """The pretrained model fine-tuned on the synthetic Q&As (`python -m minimind.train.sft`'s run)."""
    return _sft_artefact("sft", sft_config())


def sft_all_tokens_dir() -> Path:
    """Chapter 4's ablation: the same SFT run with the loss on every token, prompts included."""
    return _sft_artefact("sft_all_tokens", sft_config(supervise_all=True))


def sft():
    """The SFT chat model (CPU, eval mode)."""
    return load(sft_dir())


def _drop_resume_file(out: Path) -> None:
    # the resume file (optimizer state, RNG) is for continuing a run, not part of the artefact
    from minimind.train.engine import RESUME_FILE

    (out / RESUME_FILE).unlink(missing_ok=True)

