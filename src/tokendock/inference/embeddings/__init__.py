"""Embedding models: the embedded llama.cpp embedder and its backend."""
