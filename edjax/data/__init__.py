"""Datasets and their input pipelines, behind one registry.

    train_stream, eval_set = edjax.data.build_dataset(
        config.data, encoder_tokenizer=enc_tok, decoder_tokenizer=dec_tok,
        image_processor=None, global_batch_size=256, seed=0,
        process_index=jax.process_index(), process_count=jax.process_count())
    edjax.data.modality(config.data.name)    # 'text' (input_ids) or 'image' (pixel_values)
    edjax.data.get_config("xsum")            # a dataset's data config, every key at its default
    train_stream.random_access               # True: batch(step) takes any step; False: ascending

The registry (`registry`), the stream contracts and shared helpers (`streams`), the text pipeline
(`pipeline`: tsv; `wiki_split`; `summarization`: cnn_dailymail, xsum) and the image-text ones
(`vision_pipeline`; `ocr`: rendered_ocr; `coco_captions`). Tokenizers and image processors, which
are model I/O rather than data, live in `edjax.processing`.
"""

from edjax.data import registry, streams  # noqa: F401  (edjax.data.streams.EvalSet, ...)
from edjax.data.registry import (DATASETS, DatasetSpec, build_dataset, build_eval_set, get_config,
                                 modality, register_dataset)
from edjax.data.streams import EvalSet, IndexedStream, Rows, TrainStream

# Each dataset module registers its datasets on import.
from edjax.data import (coco_captions, ocr, pipeline, summarization,  # noqa: E402,F401
                        vision_pipeline, wiki_split)

__all__ = ["DATASETS", "DatasetSpec", "EvalSet", "IndexedStream", "Rows", "TrainStream",
           "build_dataset", "build_eval_set", "get_config", "modality", "register_dataset"]
