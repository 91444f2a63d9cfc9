"""The bad-input matrix: each case is handled (logged with a count and the ids) or is a one-line
error naming the file and the problem. Never a traceback, never a silently wrong manifest."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from lhotse import CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet

from data.corpus_fixtures import tone
from synth import write_tiny_cuts, write_units
from test_loop import SMALL
from w2v.cli import main
from w2v.data.cuts import make_cuts
from w2v.data.ingest import CorpusError, prepare
from w2v.decode.ctc import greedy_decode, load_units
from w2v.decode.emissions import compute_emissions, pad_emissions
from w2v.models import Wav2Vec2ForCTC, load_model_config
from w2v.train.config import TrainConfig
from w2v.train.loop import AudioStore, _ctc_items, train


def _corpus(root: Path, files: dict[str, tuple[np.ndarray, int]], tsv: str | bytes, **sf_kw) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, (x, sr) in files.items():
        sf.write(root / name, x, sr, **sf_kw)
    (root / "transcripts.tsv").write_bytes(tsv if isinstance(tsv, bytes) else tsv.encode())
    return root


def _cli_error(tmp_path: Path, *argv: str, corpus: str | Path = "corpus") -> str:
    """Run a `w2v` command in-process; it must exit with a one-line error (returned)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"recipe": "t", "model": "tiny",
                                      "corpus": {"type": "folder", "path": str(tmp_path / corpus)}}))
    with pytest.raises(SystemExit) as e:
        main([argv[0], "--config", str(recipe), *argv[1:]])
    msg = str(e.value.code)
    assert msg.startswith(f"w2v {argv[0]}: error: ") and "\n" not in msg and "Traceback" not in msg
    return msg


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# -- audio -------------------------------------------------------------------------------------------

def test_corrupt_and_truncated_audio_is_an_error_naming_each_file(tmp_path):
    root = _corpus(tmp_path / "corpus", {"good.wav": (tone(1.0, 16000), 16000),
                                         "cut.flac": (tone(3.0, 16000), 16000)}, "good\thi\n")
    data = (root / "cut.flac").read_bytes()
    (root / "cut.flac").write_bytes(data[: len(data) // 2])  # header still says 3 s
    (root / "noise.wav").write_bytes(os.urandom(2000))
    msg = _cli_error(tmp_path, "prepare", "--out", str(tmp_path / "m"))
    assert "cannot read 2 audio file(s)" in msg
    assert str(root / "cut.flac") in msg and "truncated" in msg and str(root / "noise.wav") in msg
    assert not (tmp_path / "m" / "recordings.jsonl.gz").exists()


def test_zero_length_audio_is_skipped_and_named(tmp_path, caplog):
    root = _corpus(tmp_path / "corpus", {"a.wav": (tone(1.0, 16000), 16000), "empty.wav": (np.zeros(0), 16000)},
                   "a\tone\nempty\ttwo\n")
    with caplog.at_level(logging.WARNING):
        paths = prepare({"type": "folder", "path": str(root)}, tmp_path / "m")
    assert "skipping 1 empty audio file(s)" in _warnings(caplog) and "empty.wav" in _warnings(caplog)
    assert [r.id for r in RecordingSet.from_file(paths["recordings"])] == ["a"]
    assert [s.id for s in SupervisionSet.from_file(paths["supervisions"])] == ["a"]


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_sampling_rates_are_resampled_to_16k(tmp_path, rate):
    root = _corpus(tmp_path / "corpus", {"s1-a.wav": (tone(1.0, rate, freq=440.0), rate),
                                         "s1-b.wav": (tone(1.0, 16000), 16000)}, "s1-a\tone\ns1-b\ttwo\n")
    prepare({"type": "folder", "path": str(root)}, tmp_path / "m")
    cut = {c.id: c for c in CutSet.from_file(make_cuts(tmp_path / "m", tmp_path / "cuts")["train"])}["s1-a"]
    audio = cut.load_audio()[0]
    assert cut.sampling_rate == 16000 and abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440.0) < 2.0  # same pitch: really resampled


def test_stereo_is_downmixed(tmp_path):
    root = _corpus(tmp_path / "corpus", {"s-st.wav": (tone(1.0, 16000, channels=2), 16000)}, "s-st\tone\n")
    prepare({"type": "folder", "path": str(root)}, tmp_path / "m")
    (cut,) = CutSet.from_file(make_cuts(tmp_path / "m", tmp_path / "cuts")["train"])
    audio = AudioStore([cut], cache=False)[0]
    assert audio.ndim == 1 and len(audio) == 16000
    assert np.abs(audio[2000:-2000]).max() == pytest.approx((0.5 + 0.25) / 2, abs=0.01)  # mean of the channels


def test_nan_and_inf_samples_are_zeroed_and_named(tmp_path, caplog):
    x = tone(1.0, 16000).astype(np.float32)
    x[100], x[200], x[300] = np.nan, np.inf, -np.inf
    root = _corpus(tmp_path / "corpus", {"s-nan.wav": (x, 16000), "s-ok.wav": (tone(1.0, 16000), 16000)},
                   "s-nan\tone\ns-ok\ttwo\n", subtype="FLOAT")
    prepare({"type": "folder", "path": str(root)}, tmp_path / "m")
    cuts = {c.id: c for c in CutSet.from_file(make_cuts(tmp_path / "m", tmp_path / "cuts")["train"])}
    store = AudioStore([cuts["s-nan"], cuts["s-ok"]], cache=False)
    with caplog.at_level(logging.WARNING):
        a, _, _ = store[0], store[1], store[0]
    assert np.isfinite(a).all() and a[100] == a[200] == a[300] == 0 and a[101] == pytest.approx(x[101])
    warned = [r.getMessage() for r in caplog.records if "NaN/Inf" in r.getMessage()]
    assert len(warned) == 1 and "s-nan" in warned[0] and "s-nan.wav" in warned[0] and "3 NaN/Inf" in warned[0]


def _cut(root: Path, cut_id: str, samples: int, text: str | None = None) -> MonoCut:
    path = root / f"{cut_id}.wav"
    sf.write(path, tone(samples / 16000, 16000), 16000)
    rec = Recording.from_file(path)
    sups = [SupervisionSegment(id=cut_id, recording_id=rec.id, start=0, duration=rec.duration, text=text)] \
        if text is not None else []
    return MonoCut(id=cut_id, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=sups)


def test_audio_shorter_than_the_receptive_field(tmp_path, caplog):
    """Pre-training skips it by id; decoding gives it an empty hypothesis and names it."""
    base = write_tiny_cuts(tmp_path / "a", n=6)
    tiny = _cut(tmp_path / "a", "too-short", 300, "GOD")
    cuts = tmp_path / "with_short.jsonl.gz"
    CutSet.from_cuts([*CutSet.from_file(base), tiny]).to_file(cuts)
    with caplog.at_level(logging.WARNING):
        train(TrainConfig(task="pretrain", max_updates=1, min_seconds=0.0, max_duration=4.0, crop_seconds=1.0),
              cuts, tmp_path / "exp", load_model_config("tiny", **SMALL))
    assert "skipping 1 utterance(s) shorter than 0.00s or the receptive field, e.g. too-short" in _warnings(caplog)

    units = load_units(write_units(tmp_path / "units.txt"))
    model = Wav2Vec2ForCTC(load_model_config("tiny", **SMALL), len(units)).eval()  # the base conv encoder
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        em = compute_emissions(model, [np.zeros(399, np.float32), tone(0.1, 16000).astype(np.float32)], True,
                               ids=["u-short", "u-ok"])
    assert em[0].shape[0] == 0 and em[1].shape[0] == 4
    assert "1 utterance(s) shorter than the receptive field (400 samples)" in _warnings(caplog)
    assert "u-short" in _warnings(caplog)
    assert greedy_decode(*pad_emissions(em), units)[0] == ""


# -- transcripts -------------------------------------------------------------------------------------

def test_more_ctc_tokens_than_frames_empty_and_unknown_units_are_dropped_with_ids(tmp_path, caplog):
    units = load_units(write_units(tmp_path / "units.txt"))
    cfg = load_model_config("tiny", **SMALL)
    cuts = [_cut(tmp_path, "ok", 16000, "GOD CREATED"),
            _cut(tmp_path, "long-text", 8000, " ".join(["BEGINNING"] * 10)),  # 99 tokens, 24 frames
            _cut(tmp_path, "no-text", 16000, ""),
            _cut(tmp_path, "odd-char", 16000, "GOD QUIZ")]  # Q, U, Z are not units
    with caplog.at_level(logging.WARNING):
        keep, targets, counts = _ctc_items(cuts, {u: i for i, u in enumerate(units)}, cfg,
                                           TrainConfig(min_seconds=0.1), "train.jsonl.gz")
    assert [c.id for c in keep] == ["ok"] and len(targets) == 1
    assert counts == {"short": 0, "empty": 1, "unknown_units": 1, "too_many_tokens": 1}
    w = _warnings(caplog)
    for reason, cut_id in (("too_many_tokens", "long-text"), ("empty", "no-text"), ("unknown_units", "odd-char")):
        assert f"dropped 1 utterance(s) ({reason}), e.g. {cut_id}" in w


def test_empty_transcripts_and_unrepresentable_characters_in_the_cuts_stage(tmp_path, caplog):
    files = {f"s{i}-{k}.wav": (tone(1.0, 16000), 16000) for i, k in ((1, "a"), (1, "b"), (2, "c"), (2, "d"))}
    root = _corpus(tmp_path / "corpus", files, "s1-a\thello\ns1-b\t\ns2-c\t?!\ns2-d\tcafé 42 日本\n")
    prepare({"type": "folder", "path": str(root)}, tmp_path / "m")
    with caplog.at_level(logging.WARNING):
        paths = make_cuts(tmp_path / "m", tmp_path / "cuts")
    w = _warnings(caplog)
    assert "dropped 2 labeled cuts (empty text): s1-b, s2-c" in w
    assert "normalisation dropped 4 characters" in w and "from 1 utterance(s)" in w and "s2-d" in w
    train_cuts = {c.id: c.supervisions[0].text for c in CutSet.from_file(paths["train"])}
    assert train_cuts == {"s1-a": "HELLO", "s2-d": "CAFE"}
    assert sorted(c.id for c in CutSet.from_file(paths["pretrain"])) == ["s1-a", "s1-b", "s2-c", "s2-d"]


def test_non_utf8_transcripts_are_an_error_naming_file_and_line(tmp_path):
    _corpus(tmp_path / "corpus", {"a.wav": (tone(1.0, 16000), 16000), "b.wav": (tone(1.0, 16000), 16000)},
            "a\thello\nb\tcaf\xe9\n".encode("latin-1"))
    msg = _cli_error(tmp_path, "prepare", "--out", str(tmp_path / "m"))
    assert f"{tmp_path / 'corpus' / 'transcripts.tsv'}:2: not valid UTF-8" in msg


def test_duplicate_utterance_ids_are_an_error(tmp_path):
    _corpus(tmp_path / "corpus", {"a.wav": (tone(1.0, 16000), 16000)}, "a\thello\nx\ty\na\tagain\n")
    (tmp_path / "corpus" / "x.wav").write_bytes((tmp_path / "corpus" / "a.wav").read_bytes())
    msg = _cli_error(tmp_path, "prepare", "--out", str(tmp_path / "m"))
    assert "transcripts.tsv: duplicate utterance ids: a (lines 1 and 3)" in msg
    (tmp_path / "corpus" / "transcripts.tsv").write_text("a\thello\n")
    (tmp_path / "corpus" / "sub").mkdir()
    (tmp_path / "corpus" / "sub" / "a.flac").write_bytes(b"")
    sf.write(tmp_path / "corpus" / "sub" / "a.flac", tone(1.0, 16000), 16000)
    msg = _cli_error(tmp_path, "prepare", "--out", str(tmp_path / "m"))
    assert "audio file names must be unique ids; duplicates: a (" in msg and "sub/a.flac" in msg


def test_duplicate_ids_in_a_kaldi_data_dir_are_an_error(tmp_path):
    d = tmp_path / "kaldi"
    d.mkdir()
    for u in ("u1", "u2"):
        sf.write(tmp_path / f"{u}.wav", tone(1.0, 16000), 16000)
    (d / "wav.scp").write_text(f"u1 {tmp_path / 'u1.wav'}\nu2 {tmp_path / 'u2.wav'}\n")
    (d / "text").write_text("u1 hello\nu2 world\nu1 again\n")
    with pytest.raises(CorpusError, match=r"kaldi/text: duplicate ids: u1 \(lines 1 and 3\)"):
        prepare({"type": "kaldi", "path": str(d)}, tmp_path / "m")


# -- directories -------------------------------------------------------------------------------------

def test_missing_corpus_directory(tmp_path):
    msg = _cli_error(tmp_path, "prepare", "--out", str(tmp_path / "m"), corpus="nowhere")
    assert f"corpus.path: directory {tmp_path / 'nowhere'} does not exist" in msg


def test_unwritable_output_directory(tmp_path):
    _corpus(tmp_path / "corpus", {"a.wav": (tone(1.0, 16000), 16000)}, "a\thello\n")
    (tmp_path / "blocker").write_text("a file where a directory should be")
    msg = _cli_error(tmp_path, "prepare", "--out", str(tmp_path / "blocker" / "m"))
    assert f"cannot write {tmp_path / 'blocker' / 'm' / 'recordings.jsonl.gz'}" in msg and "not writable" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(tmp_path):
    _corpus(tmp_path / "corpus", {"a.wav": (tone(1.0, 16000), 16000)}, "a\thello\n")
    (tmp_path / "ro").mkdir(mode=0o500)
    msg = _cli_error(tmp_path, "prepare", "--out", str(tmp_path / "ro"))
    assert "cannot write" in msg and "Permission denied" in msg
