"""Model weight files: finding a GGUF (from a PyPI package or a path) and converting BERT."""
