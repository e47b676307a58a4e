"""The dataset registry: data_config.name -> how to build that dataset, its modality and defaults.

    train_stream, eval_set = edjax.data.build_dataset(
        config.data, encoder_tokenizer=enc_tok, decoder_tokenizer=dec_tok,
        image_processor=processor,            # image datasets only (None for text)
        global_batch_size=256, seed=0,
        process_index=jax.process_index(), process_count=jax.process_count())
    edjax.data.modality("rendered_ocr")       # 'image': the model takes pixel_values
    edjax.data.get_config("cnn_dailymail")    # that dataset's data config with its defaults

Every dataset module registers itself with `register_dataset` (importing `edjax.data` imports them
all), so this file is the only dispatch point: the trainer, the study and predict ask it, never
branch on a name. A name may carry a tfds config or version after ':' or '/'
(``cnn_dailymail:3.4.0``, ``coco_captions/2014``); the part before it picks the dataset.

Data-config defaults live in one layer: a dataset declares its keys and their defaults when it
registers (`defaults`), `get_config(name)` returns them, and its builder reads every key with
`streams.config_value(data_config, key, defaults[key])`, so a key missing from a user's config (or
None / "") means the same default everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import ml_collections

from edjax.data import streams
from edjax.model_configs import ConfigError

MODALITIES = ("text", "image")


class DataError(ConfigError):
  """Data that cannot be read as configured (missing files, a malformed line): the message names
  the file (and line) and the config key or environment variable to fix. A ConfigError, so the
  mains print it as one line."""


class DataNotFoundError(DataError, FileNotFoundError):
  """Data files or folders that are not where the config (or $EDJAX_DATA_DIR) says."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A registered dataset.

  name        the registry key (data_config.name without a tfds config / version)
  modality    'text' (batches carry input_ids / attention_mask) or 'image' (pixel_values)
  build       (data_config, *, encoder_tokenizer, decoder_tokenizer, image_processor,
              global_batch_size, seed, process_index, process_count) -> (TrainStream, EvalSet)
  build_eval  (data_config, *, encoder_tokenizer, decoder_tokenizer, image_processor,
              process_index, process_count) -> EvalSet: the eval subset alone (no training data
              read), for scoring a finished model
  defaults    the dataset's data-config keys and their defaults (without `name`)
  """
  name: str
  modality: str
  build: Callable[..., tuple[Any, Any]]
  build_eval: Callable[..., Any]
  defaults: Mapping[str, Any]


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, modality: str, defaults: Mapping[str, Any],
                     build_eval: Callable[..., Any]):
  """Decorator registering `build` (see `DatasetSpec`) under `name`; returns `build` unchanged."""
  if modality not in MODALITIES:
    raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")

  def register(build):
    if name in DATASETS and DATASETS[name].build is not build:
      raise ValueError(f"dataset {name!r} is already registered (by {DATASETS[name].build})")
    DATASETS[name] = DatasetSpec(name, modality, build, build_eval, dict(defaults))
    return build

  return register


def dataset(name: str) -> DatasetSpec:
  """The `DatasetSpec` of data_config.name `name` (a tfds config / version suffix is allowed)."""
  base = streams.base_name(name or "")
  if base not in DATASETS:
    raise ValueError(f"unknown dataset name {name!r}: expected one of {sorted(DATASETS)} "
                     "(tfds datasets may carry a config or version, e.g. 'cnn_dailymail:3.4.0')")
  return DATASETS[base]


def modality(name: str) -> str:
  """'text' or 'image': what the encoder of dataset `name` reads (input_ids or pixel_values)."""
  return dataset(name).modality


def get_config(name: str = "wiki_split") -> ml_collections.ConfigDict:
  """The data config of dataset `name` with every key at its default (see each dataset's module).

  Every key is optional in `build_dataset`: missing, None or "" means this default.
  """
  spec = dataset(name)
  return ml_collections.ConfigDict(dict(name=name, **spec.defaults))


def _name(data_config) -> str:
  name = streams.config_value(data_config, "name", None)
  if name is None:
    raise ValueError("data.name is not set: give one of " + ", ".join(sorted(DATASETS)))
  return name


def check_inputs(spec: DatasetSpec, encoder_tokenizer, decoder_tokenizer, image_processor) -> None:
  """Raises ValueError unless the tokenizers / image processor `spec`'s modality needs are given."""
  if decoder_tokenizer is None:
    raise ValueError(f"dataset {spec.name!r} needs decoder_tokenizer (the labels' tokenizer)")
  if spec.modality == "text" and encoder_tokenizer is None:
    raise ValueError(f"text dataset {spec.name!r} needs encoder_tokenizer")
  if spec.modality == "image" and not callable(image_processor):
    raise ValueError(f"image dataset {spec.name!r} needs image_processor, a callable uint8 "
                     f"[n, h, w, 3] -> float32 [n, C, H, W] (edjax.processing.images."
                     f"ImageProcessor), got {type(image_processor).__name__}")


def build_dataset(data_config, *, encoder_tokenizer=None, decoder_tokenizer,
                  image_processor=None, global_batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1):
  """This host's training stream and the eval set of the dataset `data_config.name`.

  Returns (train_stream, eval_set): train_stream follows `streams.TrainStream` (its
  `random_access` says whether `batch(step)` takes any step or only ascending ones), eval_set
  `streams.EvalSet` (the same on every host). Text datasets need encoder_tokenizer, image datasets
  image_processor; both need decoder_tokenizer. Raises ValueError for an unknown name, bad sizes
  or a missing tokenizer / processor, FileNotFoundError for missing data, before any tokenization.
  """
  spec = dataset(_name(data_config))
  if spec.modality == "image" and streams.config_value(data_config, "pack", False):
    from edjax.model_configs import ConfigError
    raise ConfigError(f"data.pack=True packs text examples, but {spec.name!r} is an image "
                      "dataset (one image per row): set data.pack=False")
  streams.check_sharding(global_batch_size, process_index, process_count)
  streams.check_seed(seed)
  check_inputs(spec, encoder_tokenizer, decoder_tokenizer, image_processor)
  return spec.build(data_config, encoder_tokenizer=encoder_tokenizer,
                    decoder_tokenizer=decoder_tokenizer, image_processor=image_processor,
                    global_batch_size=global_batch_size, seed=seed, process_index=process_index,
                    process_count=process_count)


def build_eval_set(data_config, *, encoder_tokenizer=None, decoder_tokenizer,
                   image_processor=None, process_index: int = 0, process_count: int = 1):
  """The `streams.EvalSet` of `data_config` alone (no training data read)."""
  spec = dataset(_name(data_config))
  check_inputs(spec, encoder_tokenizer, decoder_tokenizer, image_processor)
  return spec.build_eval(data_config, encoder_tokenizer=encoder_tokenizer,
                         decoder_tokenizer=decoder_tokenizer, image_processor=image_processor,
                         process_index=process_index, process_count=process_count)
