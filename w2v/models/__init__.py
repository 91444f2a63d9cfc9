"""wav2vec-family models: config, building blocks, quantizer, masking and assemblies."""

from w2v.models.components import (
    ConvFeatureEncoder,
    ConvPositionalEmbedding,
    FeatureProjection,
    GradMultiply,
    TransformerEncoder,
    conv_output_lengths,
    lengths_to_padding_mask,
)
from w2v.models.config import Wav2Vec2Config, load_model_config
from w2v.models.masking import compute_mask_indices, sample_negatives
from w2v.models.quantizer import GumbelVectorQuantizer, QuantizerOutput
from w2v.models.wav2vec2 import (
    PreTrainingOutput,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    Wav2Vec2Output,
    count_parameters,
)

__all__ = [
    "ConvFeatureEncoder",
    "ConvPositionalEmbedding",
    "FeatureProjection",
    "GradMultiply",
    "GumbelVectorQuantizer",
    "PreTrainingOutput",
    "QuantizerOutput",
    "TransformerEncoder",
    "Wav2Vec2Config",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2Model",
    "Wav2Vec2Output",
    "compute_mask_indices",
    "conv_output_lengths",
    "count_parameters",
    "lengths_to_padding_mask",
    "load_model_config",
    "sample_negatives",
]
