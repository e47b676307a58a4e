"""Model I/O that is not a dataset: tokenizers (`tokenizers.Tokenizer`) and image processors
(`images.ImageProcessor`), read from a checkpoint's files. Datasets live in `edjax.data`."""
