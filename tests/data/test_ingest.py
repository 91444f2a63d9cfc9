"""w2v.data.ingest on fake folder and Kaldi layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from lhotse import RecordingSet, SupervisionSet

from corpus_fixtures import tone
from w2v.data.ingest import CorpusError, default_speaker, prepare, read_transcripts


def load(paths):
    recs = {r.id: r for r in RecordingSet.from_file(paths["recordings"])}
    sups = {s.id: s for s in SupervisionSet.from_file(paths["supervisions"]) or []}
    return recs, sups


def test_folder_mixed_formats(folder_corpus, tmp_path):
    paths = prepare({"type": "folder", "path": str(folder_corpus)}, tmp_path / "m")
    recs, sups = load(paths)
    assert set(recs) == {"spkA-001", "spkA-002", "spkB-001", "spkB-002", "pool-001"}
    assert (recs["spkA-001"].sampling_rate, recs["spkA-001"].num_channels) == (8000, 2)
    assert recs["spkA-002"].sampling_rate == 22050 and recs["spkB-001"].sampling_rate == 48000
    assert recs["spkA-001"].duration == pytest.approx(1.0)
    assert set(sups) == {"spkA-001", "spkA-002", "spkB-001", "spkB-002"}  # pool-001 unlabeled
    assert sups["spkA-001"].text == "Hello, world!"  # raw text; normalised in the cuts stage
    assert sups["spkA-001"].speaker == "spkA" and sups["spkA-002"].speaker == "Alice"
    assert sups["spkA-001"].channel == [0, 1]
    assert {k: s.custom["split"] for k, s in sups.items()} == {
        "spkA-001": "train", "spkA-002": "train", "spkB-001": "dev", "spkB-002": "test_other"}
    assert not list(paths["recordings"].parent.glob(".*"))  # no temp files left


def test_transcripts_without_header(tmp_path):
    tsv = tmp_path / "transcripts.tsv"
    tsv.write_text("1089-134686-0000\thello there\nu_2\tsecond\tbob\nsolo\t\n", encoding="utf-8")
    rows = read_transcripts(tsv)
    assert [(r.id, r.text, r.speaker, r.split) for r in rows] == [
        ("1089-134686-0000", "hello there", "1089", "train"), ("u_2", "second", "bob", "train"),
        ("solo", "", "solo", "train")]
    assert default_speaker("ab_cd-ef") == "ab" and default_speaker("-x") == "-x"


def test_all_unlabeled_empty_transcripts(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    sf.write(root / "x.wav", tone(0.5, 16000), 16000)
    (root / "transcripts.tsv").write_text("")
    recs, sups = load(prepare({"type": "folder", "path": root}, tmp_path / "m"))
    assert list(recs) == ["x"] and not sups


def write_kaldi(d: Path, split_audio: Path, ids=("r1", "r2")) -> Path:
    d.mkdir(parents=True)
    for rid in ids:
        sf.write(split_audio / f"{rid}.wav", tone(3.0, 16000), 16000)
    (d / "wav.scp").write_text("".join(f"{r} {split_audio / f'{r}.wav'}\n" for r in ids))
    segs = [(f"{r}-seg{j}", r, j * 1.0, j * 1.0 + 0.9) for r in ids for j in range(2)]
    (d / "segments").write_text("".join(f"{u} {r} {a} {b}\n" for u, r, a, b in segs))
    (d / "text").write_text("".join(f"{u} text of {u}\n" for u, *_ in segs))
    (d / "utt2spk").write_text("".join(f"{u} spk{r}\n" for u, r, *_ in segs))
    return d


def test_kaldi_dirs_combined(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    train = write_kaldi(tmp_path / "data" / "train", audio, ("r1", "r2"))
    test = write_kaldi(tmp_path / "data" / "test", audio, ("r3",))
    paths = prepare([{"type": "kaldi", "path": train}, {"type": "kaldi", "path": test, "split": "test"}],
                    tmp_path / "m")
    recs, sups = load(paths)
    assert set(recs) == {"r1", "r2", "r3"} and recs["r1"].duration == pytest.approx(3.0)
    assert len(sups) == 6
    s = sups["r3-seg1"]
    assert (s.recording_id, s.start, s.duration, s.speaker, s.text, s.custom["split"]) == (
        "r3", 1.0, pytest.approx(0.9), "spkr3", "text of r3-seg1", "test")
    assert sups["r1-seg0"].custom["split"] == "train"


def test_kaldi_without_segments(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    d = write_kaldi(tmp_path / "k", audio)
    (d / "segments").unlink()
    (d / "text").write_text("r1 first\nr2 second\n")
    (d / "utt2spk").write_text("r1 a\nr2 b\n")
    _, sups = load(prepare({"type": "kaldi", "path": d}, tmp_path / "m"))
    assert {k: (s.text, s.speaker, s.duration) for k, s in sups.items()} == {
        "r1": ("first", "a", pytest.approx(3.0)), "r2": ("second", "b", pytest.approx(3.0))}


@pytest.mark.parametrize("corpus, match", [
    ({"type": "folder", "path": "/no/such/dir"}, r"corpus\.path: directory /no/such/dir does not exist"),
    ({"type": "folder"}, r"corpus\.path: missing"),
    ({"type": "zip", "path": "."}, r"corpus\.type: 'zip'"),
    ([{"type": "kaldi", "path": "/no/such/kaldi"}], r"corpus\[0\]\.path: directory /no/such/kaldi"),
])
def test_config_errors(corpus, match, tmp_path):
    with pytest.raises(CorpusError, match=match):
        prepare(corpus, tmp_path / "m")


def test_transcript_without_audio(folder_corpus, tmp_path):
    with open(folder_corpus / "transcripts.tsv", "a") as f:
        for i in range(7):
            f.write(f"ghost-{i}\tboo\t\ttrain\n")
    with pytest.raises(CorpusError, match=r"7 transcript id\(s\) have no audio.*ghost-0.*\(7 in all\)"):
        prepare({"type": "folder", "path": folder_corpus}, tmp_path / "m")


def test_duplicate_ids(folder_corpus, tmp_path):
    with open(folder_corpus / "transcripts.tsv", "a") as f:
        f.write("spkA-002\tagain\t\ttrain\n")
    with pytest.raises(CorpusError, match=r"duplicate utterance ids: spkA-002 \(lines 3 and 6\)"):
        prepare({"type": "folder", "path": folder_corpus}, tmp_path / "m")


def test_duplicate_audio_stems(folder_corpus, tmp_path):
    sf.write(folder_corpus / "spkA-002.wav", tone(0.5, 16000), 16000)
    with pytest.raises(CorpusError, match=r"duplicates: spkA-002"):
        prepare({"type": "folder", "path": folder_corpus}, tmp_path / "m")


def test_non_utf8_transcripts(folder_corpus, tmp_path):
    tsv = folder_corpus / "transcripts.tsv"
    tsv.write_bytes(tsv.read_bytes() + "spkX-1\tna\xefve\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=rf"{tsv}:6: not valid UTF-8"):
        prepare({"type": "folder", "path": folder_corpus}, tmp_path / "m")


def test_bad_split_and_unreadable_audio(folder_corpus, tmp_path):
    tsv = folder_corpus / "transcripts.tsv"
    tsv.write_text(tsv.read_text().replace("test_other", "holdout"))
    with pytest.raises(CorpusError, match=r"transcripts.tsv:5: unknown split 'holdout'"):
        prepare({"type": "folder", "path": folder_corpus}, tmp_path / "m")
    tsv.write_text(tsv.read_text().replace("holdout", "test"))
    (folder_corpus / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(CorpusError, match=r"cannot read 1 audio file\(s\): .*broken.wav"):
        prepare({"type": "folder", "path": folder_corpus}, tmp_path / "m")


def test_kaldi_paths_relative_to_data_dir(tmp_path):
    d = tmp_path / "k"
    d.mkdir()
    (d / "wavs").mkdir()
    sf.write(d / "wavs" / "r1.wav", tone(1.5, 8000), 8000)
    (d / "wav.scp").write_text("r1 wavs/r1.wav\n")
    (d / "text").write_text("r1 hello\n")
    recs, sups = load(prepare({"type": "kaldi", "path": d, "split": "dev"}, tmp_path / "m"))
    assert recs["r1"].sampling_rate == 8000 and recs["r1"].duration == pytest.approx(1.5)
    assert (sups["r1"].text, sups["r1"].speaker, sups["r1"].custom["split"]) == ("hello", "r1", "dev")
