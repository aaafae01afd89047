"""Export a MiniMind to a Hugging Face transformers folder that loads without custom code
(`AutoModelForCausalLM.from_pretrained`, `vllm serve`): the layout mapping is
`minimind.formats.to_transformers_model`; this writes the folder."""
import os
import tempfile
from pathlib import Path

from minimind.formats import to_transformers_model
from minimind.model import MiniMind


def export_transformers(model: MiniMind, out_dir, tokenizer=None) -> Path:
    """Write a transformers folder (config.json, model.safetensors, generation_config.json, and the
    tokenizer files if `tokenizer` is given) that `AutoModelForCausalLM.from_pretrained` loads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_model = to_transformers_model(model)
    # write everything beside the target, then move each finished file into place (atomic per file)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as staging:
        hf_model.save_pretrained(staging, safe_serialization=True)
        for name in sorted(os.listdir(staging)):
            os.replace(os.path.join(staging, name), out_dir / name)
    if tokenizer is not None:
        tokenizer.save(out_dir)
    return out_dir
