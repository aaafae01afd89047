"""MiniMind: the package the MiniMind Book builds, chapter by chapter.

Importing it is light: heavy optional dependencies (transformers, FastAPI, Streamlit,
gguf) are imported only by the modules that need them.
"""
__version__ = "0.1.0"
