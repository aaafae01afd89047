"""lm-eval `custom_dataset` for the tasks of this folder: the jsonl beside the YAML, read offline.

Why not `dataset_path: json` with `data_files`: that works offline too, but `datasets` resolves a
relative data file against the working directory (not the YAML's folder) and copies it into its
cache (~/.cache/huggingface/datasets); reading the file here works from any directory and
writes nothing.
"""
import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load(data_file, **_metadata):
    """{"test": the rows of `data_file`}; lm-eval also passes its metadata (model_args …), unused here."""
    lines = (HERE / data_file).read_text(encoding="utf-8").splitlines()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([json.loads(line) for line in lines if line.strip()])})
