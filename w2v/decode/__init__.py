"""Decoding CTC emissions into words.

``w2v.decode.ctc``: greedy best-path decoding (the paper's "no LM" rows) and ``units.txt``.
``w2v.decode.lexicon``: lexicon-constrained beam search with a KenLM n-gram (flashlight-text);
imported on demand so that greedy decoding does not need flashlight.
``w2v.decode.tune``: grid search of the LM weight and word score on a dev set.
``w2v.decode.graph``: the HLG decoding graph (kaldifst, kaldilm); ``w2v.decode.wfst``: decoding
over it (kaldi-decoder, k2 when installed); ``w2v.decode.rescore``: n-best rescoring with a
larger n-gram and the Transformer LM; ``w2v.decode.run``: the decode stage's decoder rows.
"""

from w2v.decode.ctc import greedy_decode, load_units

__all__ = ["greedy_decode", "load_units"]
