"""The `w2v` command line: clear one-line errors for bad input, and `transcribe`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from synth import write_tiny_cuts, write_units
from test_loop import _cfg
from w2v.cli import main
from w2v.train.config import TrainConfig
from w2v.train.loop import train


def _fail(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return str(e.value)


def test_unknown_config_key_is_a_clear_error(tmp_path, capsys):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("recipe: x\nmodel: tiny\ncorpus: {type: folder, path: /nope}\npretrian: {}\n")
    msg = _fail(["prepare", "--config", str(cfg), "--out", str(tmp_path / "m")], capsys)
    assert "recipe.yaml" in msg and "pretrian" in msg


def test_missing_corpus_folder_names_the_path(tmp_path, capsys):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(f"recipe: x\nmodel: tiny\ncorpus: {{type: folder, path: {tmp_path}/absent}}\n")
    msg = _fail(["prepare", "--config", str(cfg), "--out", str(tmp_path / "m")], capsys)
    assert "absent" in msg
    assert not (tmp_path / "m" / "recordings.jsonl.gz").exists()


def test_unknown_training_setting_names_it(tmp_path, capsys):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("recipe: x\nmodel: tiny\ncorpus: {type: folder, path: /nope}\npretrain: {max_update: 3}\n")
    msg = _fail(["pretrain", "--config", str(cfg), "--cuts", "c.jsonl.gz", "--out", str(tmp_path / "e")], capsys)
    assert "max_update" in msg and "recipe.yaml" in msg


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctc")
    cuts = write_tiny_cuts(root / "a", n=4, min_s=1.5, max_s=2.0)
    units = write_units(root / "units.txt")
    ft = TrainConfig(task="finetune", max_updates=2, lr=1e-3, max_duration=8.0, save_every=2)
    return train(ft, cuts, root / "ft", _cfg(), units_path=units), root


def test_transcribe_prints_one_line_per_file(tiny_ctc, tmp_path, capsys):
    model, _ = tiny_ctc
    files = []
    for i, (sr, ch) in enumerate([(16000, 1), (8000, 2)]):
        x = 0.1 * np.random.default_rng(i).standard_normal((sr, ch)).astype(np.float32)
        f = tmp_path / f"a{i}.wav"
        sf.write(f, x, sr)
        files.append(str(f))
    main(["transcribe", str(model), *files])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == files


@pytest.mark.skipif(not shutil.which("lmplz") and not __import__("pathlib").Path(
    __import__("sys").executable).with_name("lmplz").exists(), reason="KenLM lmplz not built (scripts/setup.sh)")
def test_transcribe_with_lm(tiny_ctc, tmp_path, capsys):
    from w2v.lm import build_ngram

    model, root = tiny_ctc
    text = tmp_path / "lm.txt"
    text.write_text("GOD CREATED THE HEAVEN\nAND THE EARTH\nIN THE BEGINNING GOD CREATED LIGHT\n")
    lm = build_ngram(text, tmp_path / "lm", order=3)
    lex = tmp_path / "lexicon.txt"
    words = sorted(set(text.read_text().split()))
    lex.write_text("".join(f"{w} {' '.join(w)} |\n" for w in words))
    f = tmp_path / "a.wav"
    sf.write(f, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    main(["transcribe", str(model), str(f), "--lm", str(lm), "--lexicon", str(lex), "--beam", "20"])
    out = capsys.readouterr().out.strip().split("\t")
    assert out[0] == str(f) and set(out[1].split()) <= set(words)


def test_transcribe_unreadable_audio_names_the_file(tiny_ctc, tmp_path, capsys):
    model, _ = tiny_ctc
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"not audio at all")
    assert "broken.flac" in _fail(["transcribe", str(model), str(bad)], capsys)
