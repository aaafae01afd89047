"""`python -m minimind.export` / `minimind export`: write a trained model in another format.

    minimind export transformers --model sft --out out/minimind-hf      # AutoModelForCausalLM folder (vLLM serves it)
    minimind export gguf --model sft --out out/minimind.gguf --outtype f16 # llama.cpp / Ollama (+ Modelfile)
    minimind export gguf --model sft --out out/minimind-q8.gguf --outtype q8_0   # 8-bit, about half of f16
    minimind export gguf --model out/sft --lora out/lora_identity --out out/identity.gguf

A LoRA adapter is merged into the weights first, so the exported model needs no adapter support.
"""
import argparse
import sys
from pathlib import Path

from minimind.commandline import accept_both_spellings
from minimind.export.gguf import GGUF_DTYPES
from minimind.inference import add_model_flags, load_chat_model


def load_for_export(model: str, tokenizer=None, lora=(), preset=None):
    """(model, tokenizer) in fp32 on the CPU with at most one adapter merged and the LoRA layers removed."""
    from minimind.lora import unload_lora

    if len(lora) > 1:
        raise ValueError("export merges one LoRA adapter into the weights; got several")
    network, tok = load_chat_model(model, tokenizer, lora, preset, device="cpu", dtype="float32")
    if lora:
        unload_lora(network)  # load_chat_model merged the adapter; keep plain Linear layers
    return network, tok


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimind export", description="Export a MiniMind checkpoint.")
    parser.add_argument("format", choices=["transformers", "gguf"])
    add_model_flags(parser, device=False)  # exported in fp32 from the CPU; one --lora adapter is merged in
    parser.add_argument("--out", required=True, help="output folder (transformers) or .gguf file")
    parser.add_argument("--outtype", "--dtype", dest="dtype", default="f32", choices=list(GGUF_DTYPES),
                        help="GGUF weight type: f32, f16, or q8_0 (8-bit blocks, as llama.cpp's --outtype)")
    parser.add_argument("--name", default="MiniMind", help="model name stored in the GGUF file")
    return accept_both_spellings(parser)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, tokenizer = load_for_export(args.model, args.tokenizer, args.lora, args.preset)
        if args.format == "transformers":
            from minimind.export.transformers import export_transformers

            out = export_transformers(model, args.out, tokenizer=tokenizer)
            print(f"wrote {out} (load with transformers.AutoModelForCausalLM.from_pretrained; vllm serve {out})")
        else:
            from minimind.export.gguf import export_gguf

            out = export_gguf(model, tokenizer, args.out, dtype=args.dtype, name=args.name)
            print(f"wrote {out} and {Path(out).parent / 'Modelfile'} (ollama create minimind -f Modelfile)")
    except (ValueError, FileNotFoundError) as error:
        print(f"minimind export: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
