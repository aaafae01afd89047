"""Export trained models: a transformers folder (`export.transformers`) and GGUF (`export.gguf`)."""
