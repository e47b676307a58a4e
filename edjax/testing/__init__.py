"""Helpers that compare edjax with its oracle, transformers (PyTorch): tiny random HF models and
the shared parity checks. They import torch and transformers (the `test` extra); the tests and
`scripts/parity_table.py` use them, the library never does."""
