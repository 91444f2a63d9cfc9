"""w2v: the wav2vec family of self-supervised speech models as staged recipes."""

__version__ = "0.1.0"
