"""COCO captions (tfds ``coco_captions``: COCO 2014 images, Karpathy & Li splits) for captioning.

    processor = ImageProcessor.from_dir(encoder_dir)        # or ImageProcessor.for_image_size(...)
    train_stream, eval_set = edjax.data.build_dataset(   # data_config.name == 'coco_captions'
        config.data, decoder_tokenizer=decoder_tokenizer, image_processor=processor,
        global_batch_size=256, seed=0,
        process_index=jax.process_index(), process_count=jax.process_count())
    batch = train_stream.batch(step)       # this host's rows of global batch `step` (ascending)
    for b in eval_set.batches(32): ...     # the fixed eval subset, last batch padded

The contracts of `edjax.data.streams` (a forward-only TrainStream and an EvalSet) with images in
place of source tokens. Batches are dicts of numpy arrays with static shapes::

    pixel_values            float32 [b, 3, height, width]  `ImageProcessor` output (transformers'
                                                             ViT / DeiT preprocessing)
    labels                  int32 [b, max_target_length]    caption tokens WITHOUT a start token,
                                                             eos last, -100 on padding
                                                             (`Tokenizer.encode_targets`)
    decoder_attention_mask  int32 [b, max_target_length]    1 where labels != -100

Eval batches also carry `valid` [b] and `index` [b] (position in `CocoEvalSet.examples`).

Data. tfds ``coco_captions`` (config 2014): an example is an image with its captions (5 for almost
every image, a few have 6 or 7); splits train (82,783 images), restval (30,504), val (5,000),
test (5,000). Captions are whitespace-normalised (stripped, runs of whitespace -> one space);
case and punctuation are kept. Images are read undecoded (`tfds.decode.SkipDecoding` within a
`PartialDecoding` of image, image/id and captions/text) and decoded by `images.tf_decode_image`
(train) or PIL (eval), both equal to what transformers users get from PIL.

Training stream. One example = one (image, caption) pair: every caption of every image of
`train_splits` (default train + restval, the usual 113k-image Karpathy training set). Epoch e is
read by its own tf.data pipeline, seeded by (seed, e):

  tfds files shuffled (ReadConfig.shuffle_seed) -> images shuffled (buffer image_shuffle_buffer)
  -> one element per caption -> pairs shuffled (buffer shuffle_buffer) -> global batches of
  global_batch_size encoded pairs (the incomplete last one dropped) -> this host's rows
  [p*G/P, (p+1)*G/P) -> decode + `ImageProcessor.tf_preprocess` (parallel, deterministic)

so the global batches are a function of (seed, data) alone: the same for any process_count, and
host p's rows are its slice of them. (tf.data shuffles combine their seed with TensorFlow's global
seed: the orders assume nobody calls tf.random.set_seed, which nothing in edjax does.) Every host
reads (but does not decode) every record: the read I/O is not split across hosts, the decoding and
resizing is. An epoch has
steps_per_epoch = num_examples // global_batch_size global batches; the pairs that do not fill
the last one (a different set each epoch) are skipped. Captions are tokenized in Python per batch.

Resumption. tf.data streams cannot seek, so `CocoTrainStream.batch(step)` wants steps in increasing
order: the next step is read, a repeated step returns the previous batch again, a smaller step
raises ValueError. A jump (a resumed run's first batch(k), k > 0) needs steps_per_epoch: it counts
the training pairs with one pass over the captions (the records are read, images not decoded;
set data.num_train_examples to skip that pass) and opens epoch k // steps_per_epoch, skipping its
first k % steps_per_epoch global batches before decoding. The batches are those an uninterrupted
run would see.

Eval subset. The first `eval_examples` images (after `eval_offset`) of `eval_split` (default
'val') in tfds file order, which is a pseudo-random order (tfds shuffles records by key hash when
it prepares a dataset), so the subset is a fixed uniform sample. Images are decoded with PIL,
resized / cropped by the numpy path and kept as uint8 (3 * height * width bytes each); `examples`
are (image id as str, first caption), `references` every caption of the image (a list per
example, for multi-reference BLEU / ROUGE in `edjax.metrics`); the eval loss uses the first
caption as labels.

Preparing the data (once; about 38 GB in the tfds data_dir): ``tfds build coco_captions
--data_dir=DIR`` (downloads COCO 2014 train/val images and annotations and Karpathy's split file),
or data.download=True. data.data_dir defaults to tfds' default ($TFDS_DATA_DIR or
~/tensorflow_datasets).
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Iterator, Sequence

import numpy as np
from absl import logging

from edjax.data import registry
from edjax.data.streams import EvalSet, base_name, check_sharding, config_value
from edjax.losses import IGNORE_INDEX
from edjax.processing import images as images_lib
from edjax.processing.images import ImageProcessor
from edjax.processing.tokenizers import Tokenizer

NAME = "coco_captions"
SPLITS = ("train", "restval", "val", "test")


# The data-config keys of ``coco_captions`` and their defaults (`edjax.data.get_config`).
# name may carry a tfds config / version: 'coco_captions/2014', 'coco_captions:1.1.0'.
DEFAULTS = dict(
    train_splits=("train", "restval"),  # splits concatenated into the training pairs
    eval_split="val",            # Karpathy's 5000-image test split is 'test'
    eval_examples=200,           # images in the eval subset (<= 0: the whole split)
    eval_offset=0,               # the subset starts at this image of the split's file order
    max_target_length=32,        # label length, eos included (COCO captions are ~12 words)
    data_dir="",                 # the tfds data_dir ("": tfds' default)
    download=False,              # let tfds download and prepare the ~38 GB dataset when missing
    image_shuffle_buffer=1024,   # images in the first shuffle buffer (encoded JPEGs, ~160 KB each)
    shuffle_buffer=2048,         # (image, caption) pairs in the second (each holds a copy of its
                                 # encoded image: ~330 MB of host memory at 2048)
    num_train_examples=0,        # the number of training pairs, if known (0: counted when needed)
)


def _setting(data_config, key: str):
  """data_config[key], missing / None / "" meaning DEFAULTS[key] (data_dir: None)."""
  value = config_value(data_config, key, DEFAULTS[key])
  return None if key == "data_dir" and value == "" else value


def normalize_caption(text: str | bytes) -> str:
  """A raw caption -> the training target / reference: stripped, whitespace runs -> one space."""
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  return " ".join(text.split())


def caption_labels(tokenizer: Tokenizer, texts: Sequence[str],
                   max_length: int) -> dict[str, np.ndarray]:
  """labels / decoder_attention_mask int32 [len(texts), max_length] (as pipeline.Tokenized.rows)."""
  ids, mask = tokenizer.encode_targets(list(texts), max_length, pad_to=max_length)
  return {"labels": np.where(mask > 0, ids, IGNORE_INDEX).astype(np.int32),
          "decoder_attention_mask": mask.astype(np.int32)}


# ----------------------------------------------------------------------------- tfds reading



def _tfds_data_dir(data_dir: str | None) -> str:
  return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def _load(name: str, split: str, data_dir: str | None, download: bool, *, decoders,
          shuffle_seed: int | None = None):
  """tfds.load with a clear FileNotFoundError for an unprepared dataset."""
  import tensorflow_datasets as tfds
  from edjax.data import wiki_split  # noqa: F401  (tfds compatibility shim)
  import tensorflow as tf
  try:  # tf.data only: keep TensorFlow off the accelerators JAX uses
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
  try:
    return tfds.load(name, split=split, data_dir=data_dir, download=download,
                     shuffle_files=shuffle_seed is not None, decoders=decoders,
                     read_config=read_config)
  except AssertionError as e:  # tfds: "could not find data in ..."
    raise FileNotFoundError(
        f"tfds dataset {name!r} is not prepared in {_tfds_data_dir(data_dir)}: build it once with "
        f"`tfds build coco_captions --data_dir={_tfds_data_dir(data_dir)}` (downloads COCO 2014 "
        "and Karpathy's splits, ~38 GB), or set data.download=True, or point data.data_dir at the "
        f"folder that holds coco_captions/ ({e})") from e


def _decoders(image: bool = True):
  """Undecoded image bytes + image/id + caption texts (objects not parsed)."""
  import tensorflow_datasets as tfds
  if not image:
    return tfds.decode.PartialDecoding({"captions": {"text": True}})
  return tfds.decode.PartialDecoding({"image": True, "image/id": True, "captions": {"text": True}},
                                     decoders={"image": tfds.decode.SkipDecoding()})


def _split_expr(splits: Sequence[str] | str) -> str:
  """('train', 'restval') or 'train,restval' or 'train+restval' -> 'train+restval' (checked)."""
  if isinstance(splits, str):
    splits = splits.replace("+", ",").split(",")
  splits = [s.strip() for s in splits if s.strip()]
  if not splits:
    raise ValueError("data.train_splits is empty: give e.g. ('train', 'restval')")
  unknown = [s for s in splits if s.split("[")[0] not in SPLITS]
  if unknown:
    raise ValueError(f"unknown coco_captions split(s) {unknown}: the splits are {SPLITS} (tfds "
                     "slices such as 'train[:10%]' work too)")
  return "+".join(splits)


# ----------------------------------------------------------------------------- train


class CocoTrainStream:
  """This host's rows of each global training batch of (image, caption) pairs (module docstring):
  a forward-only `streams.TrainStream` (random_access = False).

  `batch(step)` reads forward: ascending steps, a repeat of the last step returns the same batch,
  a jump ahead seeks (counting the pairs first if num_examples is unknown), a step below the
  last raises ValueError. Attributes: global_batch_size, local_batch_size, seed, process_index,
  process_count, image_size ((height, width) of pixel_values), num_images (from tfds' split info;
  None when unknown), num_examples (the number of pairs; None until given or counted: see
  `count_examples`).
  """

  random_access = False

  def __init__(self, processor: ImageProcessor, tokenizer: Tokenizer, *, name: str = NAME,
               splits: Sequence[str] = ("train", "restval"), data_dir: str | None = None,
               download: bool = False, max_target_length: int = 32, global_batch_size: int,
               seed: int, process_index: int = 0, process_count: int = 1,
               image_shuffle_buffer: int = 1024, shuffle_buffer: int = 2048,
               num_examples: int | None = None):
    check_sharding(global_batch_size, process_index, process_count)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if image_shuffle_buffer < 1 or shuffle_buffer < 1:
      raise ValueError(f"shuffle buffers must be >= 1, got image_shuffle_buffer="
                       f"{image_shuffle_buffer}, shuffle_buffer={shuffle_buffer}")
    self.image_size = images_lib.check_same_size(processor)
    self.processor, self.tokenizer = processor, tokenizer
    self.name, self.split = name, _split_expr(splits)
    self.data_dir, self.download = data_dir, bool(download)
    self.max_target_length = int(max_target_length)
    self.global_batch_size = int(global_batch_size)
    self.local_batch_size = self.global_batch_size // process_count
    self.seed = int(seed)
    self.process_index, self.process_count = int(process_index), int(process_count)
    self.image_shuffle_buffer, self.shuffle_buffer = int(image_shuffle_buffer), int(shuffle_buffer)
    self.num_examples = int(num_examples) if num_examples else None
    self.num_images = None
    self._steps_per_epoch = None if self.num_examples is None else self._check_steps(
        self.num_examples)
    self._iterator: Iterator | None = None
    self._epoch = 0
    self._epoch_first_step = 0  # the global step of this epoch's first batch
    self._next_step = 0
    self._last: tuple[int, dict] | None = None

  # --------------------------------------------------------------------------- sizes

  def _check_steps(self, num_examples: int) -> int:
    steps = num_examples // self.global_batch_size
    if steps < 1:
      raise ValueError(f"the training splits {self.split!r} hold {num_examples} (image, caption) "
                       f"pairs, fewer than global_batch_size={self.global_batch_size}")
    return steps

  def count_examples(self) -> int:
    """Counts the training pairs (one read of the records, no image decoded); sets num_examples."""
    import tensorflow as tf
    t0 = time.time()
    ds = _load(self.name, self.split, self.data_dir, self.download, decoders=_decoders(False))
    ds = ds.map(lambda ex: tf.size(ex["captions"]["text"], out_type=tf.int64),
                num_parallel_calls=tf.data.AUTOTUNE)
    count = int(ds.reduce(tf.constant(0, tf.int64), lambda a, b: a + b).numpy())
    logging.info("%s %s: %d (image, caption) pairs, counted in %.1f s", self.name, self.split,
                 count, time.time() - t0)
    if self.num_examples is not None and self.num_examples != count:
      raise ValueError(f"data.num_train_examples={self.num_examples} but {self.split!r} holds "
                       f"{count} (image, caption) pairs: fix or unset it")
    self.num_examples = count
    self._steps_per_epoch = self._check_steps(count)
    return count

  @property
  def steps_per_epoch(self) -> int:
    """Global batches per epoch, num_examples // global_batch_size (counts pairs if unknown)."""
    if self._steps_per_epoch is None:
      self.count_examples()
    return self._steps_per_epoch

  def epoch(self, step: int) -> float:
    """Epochs completed at the start of global batch `step` (counts pairs if unknown)."""
    return int(step) / self.steps_per_epoch

  # --------------------------------------------------------------------------- reading

  def _epoch_dataset(self, epoch: int, skip_batches: int):
    """tf.data of this host's batches of `epoch`, from global batch `skip_batches` on."""
    import tensorflow as tf
    seeds = [int(s) for s in np.random.SeedSequence([self.seed, epoch]).generate_state(3)]
    ds = _load(self.name, self.split, self.data_dir, self.download, decoders=_decoders(),
               shuffle_seed=seeds[0])
    ds = ds.map(lambda ex: {"image": ex["image"], "captions": ex["captions"]["text"]})
    ds = ds.shuffle(self.image_shuffle_buffer, seed=seeds[1])
    ds = ds.flat_map(lambda ex: tf.data.Dataset.from_tensor_slices(ex["captions"]).map(
        lambda caption: {"image": ex["image"], "caption": caption}))
    ds = ds.shuffle(self.shuffle_buffer, seed=seeds[2])
    ds = ds.batch(self.global_batch_size, drop_remainder=True)  # encoded global batches
    if skip_batches:
      ds = ds.skip(skip_batches)
    lo = self.process_index * self.local_batch_size
    hi = lo + self.local_batch_size
    ds = ds.map(lambda batch: {k: v[lo:hi] for k, v in batch.items()}).unbatch()
    processor = self.processor
    ds = ds.map(lambda ex: {"pixel_values": processor.tf_preprocess(  # [3, height, width]
        images_lib.tf_decode_image(ex["image"])), "caption": ex["caption"]},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.local_batch_size, drop_remainder=True).prefetch(2)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)

  def _open(self, epoch: int, skip_batches: int) -> None:
    self._iterator = self._epoch_dataset(epoch, skip_batches).as_numpy_iterator()
    self._epoch = epoch
    self._epoch_first_step = self._next_step - skip_batches

  def _seek(self, step: int) -> None:
    """Positions the reader at global batch `step` (counting pairs first when needed)."""
    if step == 0:
      self._next_step = 0
      self._open(0, 0)
      return
    epoch, skip = divmod(step, self.steps_per_epoch)
    logging.info("%s: seeking to step %d (epoch %d, batch %d of %d)", self.name, step, epoch, skip,
                 self.steps_per_epoch)
    self._next_step = step
    self._open(epoch, skip)

  def _end_epoch(self) -> None:
    """At the end of an epoch's reader: checks / learns steps_per_epoch, opens the next epoch."""
    seen = self._next_step - self._epoch_first_step
    if seen == 0:
      raise ValueError(f"epoch {self._epoch} of {self.split!r} gave no full global batch of "
                       f"{self.global_batch_size} (image, caption) pairs")
    if self._steps_per_epoch is None:
      self._steps_per_epoch = seen
    elif seen != self._steps_per_epoch:
      raise ValueError(f"epoch {self._epoch} of {self.split!r} gave {seen} global batches, "
                       f"expected {self._steps_per_epoch} from num_examples={self.num_examples}: "
                       "data.num_train_examples is wrong (unset it to count)")
    self._open(self._epoch + 1, 0)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's rows of global batch `step`: pixel_values float32 [local_batch_size, 3, h, w],
    labels and decoder_attention_mask int32 [local_batch_size, max_target_length]."""
    step = int(step)
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    if self._last is not None and step == self._last[0]:
      return dict(self._last[1])
    if step < self._next_step:
      raise ValueError(
          f"batch({step}) asked after batch({self._next_step - 1}): the coco_captions stream reads "
          "forward only (tf.data); build a new stream with build_coco_captions to start over")
    if self._iterator is None or step != self._next_step:
      self._seek(step)
    while True:
      try:
        rows = next(self._iterator)
        break
      except StopIteration:
        self._end_epoch()
    captions = [normalize_caption(c) for c in rows["caption"]]
    batch = {"pixel_values": rows["pixel_values"],
             **caption_labels(self.tokenizer, captions, self.max_target_length)}
    self._next_step = step + 1
    self._last = (step, batch)
    return dict(batch)

  def __repr__(self) -> str:
    return (f"CocoTrainStream({self.name} {self.split}, num_examples={self.num_examples}, "
            f"global_batch_size={self.global_batch_size}, local_batch_size="
            f"{self.local_batch_size}, seed={self.seed}, process "
            f"{self.process_index}/{self.process_count})")


# ----------------------------------------------------------------------------- eval


class _CocoEvalRows:
  """The eval images (uint8, resized / cropped) and first-caption labels, row by row."""

  def __init__(self, images: np.ndarray, processor: ImageProcessor, targets: dict):
    self.images = images  # uint8 [N, height, width, 3]
    self.processor = processor
    self.targets = targets

  def __len__(self) -> int:
    return len(self.images)

  def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
    """pixel_values, labels (first caption), decoder_attention_mask of examples `idx`."""
    return {"pixel_values": self.processor.normalize(self.images[idx]),
            **{k: v[idx] for k, v in self.targets.items()}}


class CocoEvalSet(EvalSet):
  """The fixed eval subset: a `streams.EvalSet` over images, with every caption as references.

  examples: list of (image id as str, first caption); references: list of lists of all captions;
  images: uint8 [N, height, width, 3]; `batches` as EvalSet's (pixel_values, labels of the first
  caption, decoder_attention_mask, valid, index).
  """

  def __init__(self, image_ids: Sequence[int], captions: Sequence[Sequence[str]],
               images: np.ndarray, processor: ImageProcessor, tokenizer: Tokenizer,
               max_target_length: int, *, process_index: int = 0, process_count: int = 1):
    if not len(image_ids) == len(captions) == len(images):
      raise ValueError(f"{len(image_ids)} ids, {len(captions)} caption lists, {len(images)} images")
    if any(not caps for caps in captions):
      raise ValueError("every eval image needs at least one caption")
    targets = caption_labels(tokenizer, [caps[0] for caps in captions], max_target_length)
    super().__init__([(str(int(i)), caps[0]) for i, caps in zip(image_ids, captions)],
                     _CocoEvalRows(images, processor, targets),
                     references=[list(caps) for caps in captions], process_index=process_index,
                     process_count=process_count)

  @property
  def images(self) -> np.ndarray:
    return self.data.images


def _read_eval(name: str, split: str, data_dir: str | None, download: bool, offset: int,
               count: int) -> list[tuple[int, list[str], bytes]]:
  """(image id, captions, encoded image) of images [offset, offset + count) of `split`."""
  import tensorflow_datasets as tfds
  ds = _load(name, split, data_dir, download, decoders=_decoders())
  ds = ds.skip(offset)
  if count > 0:
    ds = ds.take(count)
  return [(int(ex["image/id"]), [normalize_caption(c) for c in ex["captions"]["text"]],
           bytes(ex["image"])) for ex in tfds.as_numpy(ds)]


def build_coco_eval(data_config, image_processor: ImageProcessor, decoder_tokenizer: Tokenizer, *,
                    encoder_tokenizer=None, process_index: int = 0,
                    process_count: int = 1) -> CocoEvalSet:
  """The `CocoEvalSet` of `data_config` alone (no training data touched; encoder_tokenizer is
  ignored)."""
  _check_name(data_config)
  size = images_lib.check_same_size(image_processor)
  split = _setting(data_config, "eval_split")
  if split.split("[")[0] not in SPLITS:
    raise ValueError(f"unknown coco_captions eval_split {split!r}: the splits are {SPLITS}")
  n = int(_setting(data_config, "eval_examples"))
  offset = int(_setting(data_config, "eval_offset"))
  if offset < 0:
    raise ValueError(f"data.eval_offset must be >= 0, got {offset}")
  t0 = time.time()
  records = _read_eval(config_value(data_config, "name", NAME), split,
                       _setting(data_config, "data_dir"), bool(_setting(data_config, "download")),
                       offset, n)
  if not records:
    raise ValueError(f"data.eval_offset={offset} is past the end of eval split {split!r}")

  def load(record):
    return image_processor.resize_crop(images_lib.decode_image(record[2]))  # [h, w, 3] uint8

  with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
    pixels = list(pool.map(load, records))  # PIL decodes / resizes outside the GIL
  images = np.stack(pixels) if pixels else np.zeros((0, *size, 3), np.uint8)
  logging.info("coco_captions eval: %d images of %r decoded in %.1f s", len(records), split,
               time.time() - t0)
  return CocoEvalSet([r[0] for r in records], [r[1] for r in records], images, image_processor,
                     decoder_tokenizer, _max_target_length(data_config),
                     process_index=process_index, process_count=process_count)


# ----------------------------------------------------------------------------- build


def _check_name(data_config) -> None:
  name = config_value(data_config, "name", NAME)
  if base_name(name) != NAME:
    raise ValueError(f"build_coco_captions reads tfds {NAME!r} (optionally with a config / "
                     f"version, e.g. 'coco_captions/2014'), got data.name={name!r}")


def _max_target_length(data_config) -> int:
  length = int(_setting(data_config, "max_target_length"))
  if length < 2:
    raise ValueError(f"max_target_length must be >= 2, got {length}")
  return length


@registry.register_dataset(NAME, modality="image", defaults=DEFAULTS, build_eval=build_coco_eval)
def build_coco_captions(data_config, image_processor: ImageProcessor,
                        decoder_tokenizer: Tokenizer, *, encoder_tokenizer=None,
                        global_batch_size: int, seed: int, process_index: int = 0,
                        process_count: int = 1) -> tuple[CocoTrainStream, CocoEvalSet]:
  """This host's `CocoTrainStream` and the `CocoEvalSet` (the same on every host).

  data_config keys: `DEFAULTS` (encoder_tokenizer is ignored). Raises ValueError for a bad config
  and FileNotFoundError when the tfds data is not prepared (naming the data_dir and the `tfds
  build` command). The eval subset is read first (fail fast); the training stream opens its first
  tf.data reader lazily, at the first `batch`.
  """
  _check_name(data_config)
  check_sharding(global_batch_size, process_index, process_count)
  max_length = _max_target_length(data_config)
  eval_set = build_coco_eval(data_config, image_processor, decoder_tokenizer,
                             process_index=process_index, process_count=process_count)
  stream = CocoTrainStream(
      image_processor, decoder_tokenizer, name=config_value(data_config, "name", NAME),
      splits=_setting(data_config, "train_splits"),
      data_dir=_setting(data_config, "data_dir"),
      download=bool(_setting(data_config, "download")), max_target_length=max_length,
      global_batch_size=global_batch_size, seed=seed, process_index=process_index,
      process_count=process_count,
      image_shuffle_buffer=int(_setting(data_config, "image_shuffle_buffer")),
      shuffle_buffer=int(_setting(data_config, "shuffle_buffer")),
      num_examples=int(_setting(data_config, "num_train_examples")) or None)
  import tensorflow_datasets as tfds
  splits = tfds.builder(stream.name, data_dir=stream.data_dir).info.splits  # empty under mocks
  if all(s in splits for s in stream.split.split("+")):  # whole splits only (no slices)
    stream.num_images = sum(splits[s].num_examples for s in stream.split.split("+"))
  logging.info("%r; eval: %d images", stream, len(eval_set))
  return stream, eval_set
