"""Data: tokenizers, datasets and input pipelines."""
