"""`w2v import-checkpoint` and `w2v export-hf` from the command line, and a released-style
checkpoint used straight away by `w2v transcribe`."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.interop.test_hf_import_export import save_ctc_dir, wave
from w2v.cli import main


def test_import_transcribe_export(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    _, src = save_ctc_dir(tmp_path, "base_style")
    ours = tmp_path / "imported.pt"
    main(["import-checkpoint", str(src), str(ours)])
    assert '"task": "finetune"' in capsys.readouterr().out

    audio = tmp_path / "a.wav"
    sf.write(audio, 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32), 16000)
    main(["transcribe", str(ours), str(audio)])
    assert capsys.readouterr().out.startswith(str(audio) + "\t")

    out_dir = tmp_path / "exported"
    main(["export-hf", str(ours), str(out_dir)])
    capsys.readouterr()
    x = wave()
    with torch.no_grad():
        a = transformers.Wav2Vec2ForCTC.from_pretrained(src).eval()(x).logits
        b = transformers.Wav2Vec2ForCTC.from_pretrained(out_dir).eval()(x).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_import_of_a_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="nowhere"):
        main(["import-checkpoint", str(tmp_path / "nowhere"), str(tmp_path / "o.pt")])
