"""edjax: warm-started encoder-decoder models in JAX (the public API)."""

from edjax.model_configs import ConfigError, EncoderDecoderConfig, VisionEncoderDecoderConfig
from edjax.models.bart import BartConfig, MBartConfig
from edjax.models.beit import BeitConfig
from edjax.models.bert import BertConfig, CamembertConfig, RobertaConfig, XLMRobertaConfig
from edjax.models.bert_generation import BertGenerationConfig
from edjax.models.electra import ElectraConfig
from edjax.models.gpt2 import GPT2Config
from edjax.models.swin import DonutSwinConfig, SwinConfig
from edjax.models.trocr import TrOCRConfig
from edjax.models.vit import DeiTConfig, ViTConfig
from edjax.convert import CheckpointError
from edjax.generation import GenerateOutput, generate
from edjax.losses import seq2seq_loss, shift_tokens_right
from edjax.models.encoder_decoder import EncoderDecoderModel, VisionEncoderDecoderModel
from edjax.scoring import ScoreOutput, score
from edjax.pretrained import (export_params, from_config, from_encoder_decoder_pretrained,
                              from_pretrained, save_pretrained)

__all__ = [
    "BertConfig", "RobertaConfig", "BartConfig", "MBartConfig", "GPT2Config", "ViTConfig",
    "DeiTConfig", "TrOCRConfig", "BeitConfig", "SwinConfig", "DonutSwinConfig",
    "XLMRobertaConfig", "CamembertConfig", "BertGenerationConfig", "ElectraConfig",
    "EncoderDecoderConfig", "VisionEncoderDecoderConfig", "EncoderDecoderModel",
    "VisionEncoderDecoderModel", "ConfigError", "CheckpointError", "from_pretrained",
    "from_encoder_decoder_pretrained", "from_config", "save_pretrained", "export_params",
    "generate", "GenerateOutput", "score", "ScoreOutput", "shift_tokens_right", "seq2seq_loss",
]
