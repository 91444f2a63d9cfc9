"""The mms_bible recipe: CTC segmentation, romanisation, the corpus type on a fake layout,
the generator (when espeak-ng and the SWORD Bibles are installed) and a Snakemake dry run."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from w2v.align.ctc import align_segments, segment_confidence
from w2v.align.segment import SegmentSettings, segment_recording
from w2v.data.ingest import CorpusError, prepare

ROOT = Path(__file__).resolve().parents[2]
UNITS = ["<blank>", "|", "A", "B", "C", "D"]
BLANK, SEP, A, B, C, D = range(6)


def posteriors(frames: list[int | dict[int, float]], vocab: int = len(UNITS), floor: float = 0.01) -> np.ndarray:
    """Log-probabilities: a frame is a unit id (probability ~1) or {unit: prob}; the rest share ``floor``."""
    out = np.full((len(frames), vocab), floor)
    for t, fr in enumerate(frames):
        for u, p in (fr.items() if isinstance(fr, dict) else [(fr, 1.0 - floor * (vocab - 1))]):
            out[t, u] = p
    return np.log(out / out.sum(axis=1, keepdims=True))


# ---- alignment on hand-made posteriors

def test_alignment_returns_known_boundaries_and_star_absorbs_unscripted_audio():
    # D D D is a spoken heading that is not in the text; then "AB", a pause, "CA"
    frames = [D, D, D, BLANK, A, A, BLANK, B, BLANK, BLANK, BLANK, C, BLANK, A, BLANK]
    lp = posteriors(frames)
    spans, path = align_segments(lp, [[A, B], [C, A]], blank=BLANK, star_penalty=3.0)
    assert spans == [(4, 8), (11, 14)]
    assert list(path[:3]) == [len(UNITS)] * 3  # the star column
    # without a star the heading must be blank (the text has no D), boundaries stay
    spans, path = align_segments(lp, [[A, B], [C, A]], blank=BLANK, star_penalty=None)
    assert spans == [(4, 8), (11, 14)] and list(path[:3]) == [BLANK] * 3


def test_alignment_follows_the_evidence_across_a_segment_boundary():
    # "A B | C" read as one stream; where B ends and C begins is decided by the posteriors
    frames = [A, A, B, B, B, BLANK, C, C, BLANK]
    spans, _ = align_segments(posteriors(frames), [[A, B], [C]], blank=BLANK)
    assert spans == [(0, 5), (6, 8)]
    spans, _ = align_segments(posteriors(frames), [[A], [B, C]], blank=BLANK)
    assert spans == [(0, 2), (2, 8)]


def test_repeated_units_need_a_blank_and_too_short_audio_raises():
    spans, path = align_segments(posteriors([A, BLANK, A]), [[A, A]], blank=BLANK, star_penalty=None)
    assert spans == [(0, 3)] and list(path) == [A, BLANK, A]
    with pytest.raises(ValueError, match="too long for the audio"):
        align_segments(posteriors([A, A]), [[A, A]], blank=BLANK)
    with pytest.raises(ValueError, match="no units"):
        align_segments(posteriors([A, A]), [[A], []], blank=BLANK)


def test_low_confidence_segments_are_dropped_and_counted():
    # verse 2's frames say D where its text says B: the model disagrees with the text there
    good = [A, A, BLANK, C, BLANK]
    frames = good + [BLANK] * 3 + [D, D, D, D, BLANK] + [BLANK] * 3 + good
    lp = posteriors(frames)
    texts = [[A, C], [B, B], [A, C]]
    settings = SegmentSettings(min_confidence=-1.0, confidence_window=0.1, star_penalty=None)
    segs = segment_recording(lp, texts, hop=320, settings=settings, blank=BLANK)
    assert [s.kept for s in segs] == [True, False, True]
    assert segs[0].confidence == pytest.approx(0.0, abs=1e-9)  # the path takes the best unit everywhere
    assert segs[1].confidence < -3
    assert segs[0].start == 0.0 and segs[0].end == pytest.approx(4 * 320 / 16000)
    # the confidence is the worst window's mean log ratio
    _, path = align_segments(lp, texts, blank=BLANK, star_penalty=None)
    s, e = 8, 12
    ratio = lp[np.arange(s, e), path[s:e]] - lp[s:e].max(axis=1)
    assert segment_confidence(lp, path, s, e, window=2) == pytest.approx(
        min(ratio[i:i + 2].mean() for i in range(len(ratio) - 1)))


def test_refined_edges_snap_to_speech_onsets_and_offsets():
    from w2v.align.segment import frame_levels, refine_spans

    levels = np.full(80, -60.0)
    levels[10:30] = -20.0
    levels[26:28] = -60.0  # a stop closure inside the first verse: shorter than a pause
    levels[40:60] = -25.0
    # CTC emitted the first letters a little late and the last ones early
    assert refine_spans([(14, 22), (45, 55)], levels, 15.0, max_frames=25) == [(10, 30), (40, 60)]
    # a start CTC put in the silence moves forward to the speech; an end in silence moves back
    assert refine_spans([(7, 33), (45, 55)], levels, 15.0, max_frames=25) == [(10, 30), (40, 60)]
    # an edge with no pause within reach stays where CTC put it
    assert refine_spans([(14, 22), (45, 55)], levels, 15.0, max_frames=2) == [(14, 22), (45, 55)]
    # levels of a recording: 25 ms windows every 20 ms
    x = np.zeros(16000, np.float32)
    x[8000:] = 0.1
    lv = frame_levels(x, 320, 400)
    assert len(lv) == (16000 - 400) // 320 + 1 and lv[0] < -100 and lv[-1] == pytest.approx(-20.0, abs=0.01)


# ---- romanisation

def test_romanisation_of_spanish_and_units():
    pytest.importorskip("uroman")
    from w2v.align.romanize import romanize, to_units

    text = "¡OH Jehová, cuánto se han multiplicado mis enemigos! Señor, niño"
    assert romanize(text, "spa") == "OH Jehova, cuanto se han multiplicado mis enemigos! Senor, nino"
    assert romanize("Привет, мир", "rus") == "Privet, mir"  # a script the model never saw
    units = {u: i for i, u in enumerate(["<blank>", "|", "A", "E", "N", "O", "R", "S", "I"])}
    from collections import Counter
    dropped: Counter = Counter()
    ids = to_units("¡Señor niño!", units, "spa", dropped=dropped)
    spelled = "".join({v: k for k, v in units.items()}[i] for i in ids)
    assert spelled == "SENOR|NINO" and not dropped
    assert to_units("xyz", units, "spa", dropped=dropped) == [] and dropped == Counter("XYZ")


# ---- the corpus type on a fake layout

def _tone_speech(rng: np.random.Generator, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * rng.uniform(150, 300) * t)).astype(np.float32)


def write_fake_layout(root: Path) -> Path:
    """Two languages, two chapters each (one train, one test), two verses a chapter, a seed clip."""
    rng = np.random.default_rng(0)
    for lang, words in (("eng", ["In the beginning", "God created"]), ("spa", ["En el principio", "creó Dios"])):
        d = root / lang
        (d / "chapters").mkdir(parents=True)
        (d / "seed").mkdir()
        lines = ["chapter\tverse\ttext\tsplit"]
        for c, split in (("GEN_001", "train"), ("GEN_002", "test")):
            parts = [np.zeros(4000, np.float32)]
            for v, text in enumerate(words, 1):
                parts += [_tone_speech(rng, 1.2), np.zeros(6000, np.float32)]
                lines.append(f"{c}\t{v}\t{text}\t{split}")
            sf.write(d / "chapters" / f"{c}.flac", np.concatenate(parts), 16000)
        (d / "verses.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        sf.write(d / "seed" / f"{lang}-seed1.flac", _tone_speech(rng, 1.0), 16000)
        (d / "seed" / "transcripts.tsv").write_text(f"{lang}-seed1\t{words[0]}\n", encoding="utf-8")
    return root


def write_random_aligner(path: Path) -> Path:
    """A randomly initialised CTC model.pt with letter units (what `segment.model` points at)."""
    import torch

    from w2v.models import Wav2Vec2ForCTC, load_model_config
    from w2v.train.checkpoint import save_atomic

    units = ["<blank>", "|"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'"]
    cfg = load_model_config("tiny", encoder_layers=1, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
                            encoder_attention_heads=2, conv_pos=16, conv_pos_groups=4)
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(cfg, len(units))
    save_atomic({"model": model.state_dict(), "model_config": cfg.to_dict(), "task": "finetune", "units": units,
                 "train_config": {"normalize_audio": True}}, path)
    return path


def _corpus(root: Path, model: Path, **segment) -> dict:
    return {"type": "mms_bible", "path": str(root), "segment": {"model": str(model), **segment}}


def test_prepare_fake_layout_keeps_or_drops_verses_by_confidence(tmp_path, caplog):
    pytest.importorskip("uroman")
    from lhotse import RecordingSet, SupervisionSet

    root = write_fake_layout(tmp_path / "corpus")
    model = write_random_aligner(tmp_path / "aligner.pt")
    out = tmp_path / "data" / "manifests"
    prepare(_corpus(root, model, min_confidence=-1e9), out, num_threads=1)
    recs = {r.id: r for r in RecordingSet.from_file(out / "recordings.jsonl.gz")}
    sups = SupervisionSet.from_file(out / "supervisions.jsonl.gz")
    assert sorted(recs) == ["eng-GEN_001", "eng-GEN_002", "eng-seed1", "spa-GEN_001", "spa-GEN_002",
                                          "spa-seed1"]
    verses = {s.id: s for s in sups if "GEN" in s.id}
    assert sorted(verses) == [f"{lang}-GEN_00{c}_00{v}" for lang in ("eng", "spa") for c in (1, 2) for v in (1, 2)]
    for s in verses.values():
        lang = s.id[:3]
        assert s.language == lang and s.recording_id == s.id[:11]
        assert s.custom["split"] == ("train" if "GEN_001" in s.id else f"test_{lang}")
        assert 0 <= s.start < s.end <= recs[s.recording_id].duration + 1e-6
    a, b = verses["spa-GEN_001_001"], verses["spa-GEN_001_002"]
    assert a.text == "En el principio" and a.end <= b.start  # verses in reading order, no overlap
    assert {s.id: s.custom["split"] for s in sups if "seed" in s.id} == {"eng-seed1": "train", "spa-seed1": "train"}
    table = (tmp_path / "data" / "segment" / "segments.tsv").read_text().splitlines()
    assert len(table) == 1 + 8 and all(line.split("\t")[6] == "1" for line in table[1:])

    # an impossible threshold drops every verse; each is named in the log and in the table.
    # The chapters' alignments are reused: the threshold applies to the cached scores
    cached = {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "segment" / "chapters").glob("*.json")}
    caplog.set_level(logging.WARNING)
    prepare(_corpus(root, model, min_confidence=1.0), out, num_threads=1)
    assert len(cached) == 4 and all(p.stat().st_mtime_ns == t for p, t in cached.items())
    sups = SupervisionSet.from_file(out / "supervisions.jsonl.gz")
    assert sorted(s.id for s in sups) == ["eng-seed1", "spa-seed1"]
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "dropped 8 of 8 verses" in msg and "spa-GEN_002_002 (low_confidence" in msg
    table = (tmp_path / "data" / "segment" / "segments.tsv").read_text().splitlines()
    assert all(line.split("\t")[6:8] == ["0", "low_confidence"] for line in table[1:])


def test_chapters_align_in_worker_processes_to_the_same_table(tmp_path):
    """num_threads > 1 runs the chapters' Viterbi searches in spawned processes: same segments."""
    pytest.importorskip("uroman")
    root = write_fake_layout(tmp_path / "corpus")
    model = write_random_aligner(tmp_path / "aligner.pt")
    tables = []
    for threads in (1, 2):
        base = tmp_path / f"threads{threads}"
        prepare(_corpus(root, model, min_confidence=-1e9), base / "data" / "manifests", num_threads=threads)
        tables.append((base / "data" / "segment" / "segments.tsv").read_text())
        assert len(list((base / "data" / "segment" / "chapters").glob("*.json"))) == 4
    assert tables[0] == tables[1] and len(tables[0].splitlines()) == 1 + 8
    # a chapter that cannot be aligned stops the run with its file named, from a worker too
    verses = root / "spa" / "verses.tsv"
    verses.write_text(verses.read_text(encoding="utf-8").replace("creó Dios", "creó Dios " * 80), encoding="utf-8")
    with pytest.raises(CorpusError, match=r"GEN_00[12]\.flac: cannot align .* too long for the audio"):
        prepare(_corpus(root, model, min_confidence=-1e9), tmp_path / "bad" / "data" / "manifests", num_threads=2)


def test_aligner_bootstrapped_from_seed_clips_once_and_again_when_they_change(tmp_path, caplog):
    pytest.importorskip("uroman")
    root = write_fake_layout(tmp_path / "corpus")
    boot = {"preset": "tiny", "max_updates": 2, "save_every": 2, "max_duration": 4.0,
            "model_overrides": {"encoder_layers": 1, "mask_prob": 0.0, "mask_channel_prob": 0.0}}
    corpus = {"type": "mms_bible", "path": str(root),
              "segment": {"bootstrap": boot, "min_confidence": -1e9, "device": "cpu"}}
    out = tmp_path / "data" / "manifests"
    caplog.set_level(logging.INFO)
    prepare(corpus, out, num_threads=1)
    model_dir = tmp_path / "data" / "segment" / "align_model"
    # units from the romanised seed texts ("In the beginning", "En el principio")
    units = [line.split()[0] for line in (model_dir / "units.txt").read_text().splitlines()]
    assert units == ["<blank>", "|", *sorted(set("INTHEBEGINNINGENELPRINCIPIO"))]
    assert "without a unit in the alignment model" in caplog.text  # "God created" has D, A
    first = (model_dir / "model.pt").stat().st_mtime_ns
    prepare(corpus, out, num_threads=1)
    assert (model_dir / "model.pt").stat().st_mtime_ns == first  # the same seed set: not trained again
    (root / "spa" / "seed" / "transcripts.tsv").write_text("spa-seed1\tEn el principio era\n", encoding="utf-8")
    prepare(corpus, out, num_threads=1)
    assert (model_dir / "model.pt").stat().st_mtime_ns != first
    assert "settings or seed set changed: training" in caplog.text


def test_prepare_fake_layout_errors_name_what_is_missing(tmp_path):
    root = write_fake_layout(tmp_path / "corpus")
    model = write_random_aligner(tmp_path / "aligner.pt")
    (root / "spa" / "chapters" / "GEN_002.flac").unlink()
    with pytest.raises(CorpusError, match=r"no recording for 1 chapter\(s\).*GEN_002.*found GEN_001"):
        prepare(_corpus(root, model), tmp_path / "m", num_threads=1)
    with pytest.raises(CorpusError, match=r"languages \['fra'\].*found verses.tsv for \['eng', 'spa'\]"):
        prepare({**_corpus(root, model), "languages": ["fra"]}, tmp_path / "m", num_threads=1)
    with pytest.raises(CorpusError, match="unknown key"):
        prepare(_corpus(root, model, threshold=1), tmp_path / "m", num_threads=1)
    with open(root / "eng" / "verses.tsv", "a", encoding="utf-8") as f:
        f.write("GEN_001\t3\tmore\ttest\n")
    with pytest.raises(CorpusError, match="share one split; mixed in GEN_001"):
        prepare(_corpus(root, model), tmp_path / "m", num_threads=1)


# ---- the generator (needs Debian packages) and the score it reports

sys.path.insert(0, str(ROOT / "local"))
mms_bible = pytest.importorskip("mms_bible")

SAMPLE = ('Philemon 1:1: <w savlm="strong:G3972">Paul</w>, <w savlm="x">of</w> <w savlm="a">Christ</w>'
          '<w savlm="b">Jesus</w>, <div eID="gen1" type="x-p"/> to &quot;Philemon&quot;\n(engWEB2015eb)\n')


def test_diatheke_markup_is_stripped_without_gluing_words():
    assert mms_bible.parse_diatheke(SAMPLE) == [(1, 1, 'Paul, of Christ Jesus, to "Philemon"')]


def test_chapter_specs_name_ranges_of_one_or_several_books():
    assert mms_bible.chapter_keys("Ruth 1-2") == [("Ruth", 1), ("Ruth", 2)]
    assert mms_bible.chapter_keys("Mark 16; John 1-2") == [("Mark", 16), ("John", 1), ("John", 2)]
    for bad, why in (("Ruth 4-1", "N <= M"), ("Exodus 1", "BOOK one of"), ("Ruth 1; Ruth 1-2", "twice")):
        with pytest.raises(SystemExit, match=why):
            mms_bible.chapter_keys(bad)


def _have_bibles() -> bool:
    if not (shutil.which("espeak-ng") and shutil.which("diatheke")):
        return False
    mods = subprocess.run(["diatheke", "-b", "system", "-k", "modulelist"], capture_output=True, text=True).stdout
    return "engWEB2015eb" in mods and "spaRV1909eb" in mods


@pytest.mark.skipif(not _have_bibles(), reason="needs espeak-ng, diatheke, sword-text-web, sword-text-sparv")
def test_generator_writes_the_layout_and_the_truth_scores_itself(tmp_path):
    out = tmp_path / "corpus"
    cmd = [sys.executable, str(ROOT / "local" / "mms_bible.py"), "--out", str(out), "--chapters", "Psalms 133-134",
           "--seed-chapters", "Psalms 117", "--mismatch", "1", "--jobs", "2"]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    for lang in ("eng", "spa"):
        rows = mms_bible._tsv(out / lang / "verses.tsv")
        truth = mms_bible._tsv(out / lang / "boundaries_true.tsv")
        assert [(r["chapter"], r["verse"]) for r in rows] == [(t["chapter"], t["verse"]) for t in truth]
        assert {r["chapter"] for r in rows} == {"PSA_133", "PSA_134"} and len(rows) == 6
        assert sum(t["mismatch"] == "1" for t in truth) == 1
        for c in ("PSA_133", "PSA_134"):
            info = sf.info(str(out / lang / "chapters" / f"{c}.flac"))
            spans = [(float(t["start"]), float(t["end"])) for t in truth if t["chapter"] == c]
            assert info.samplerate == 16000 and spans[0][0] > 0.5  # the spoken heading comes first
            assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:])) and spans[-1][1] < info.duration
        seed = (out / lang / "seed" / "transcripts.tsv").read_text(encoding="utf-8").splitlines()
        assert len(seed) == 2 and all((out / lang / "seed" / f"{line.split(chr(9))[0]}.flac").is_file()
                                      for line in seed)
    assert "Jehová" in (out / "spa" / "verses.tsv").read_text(encoding="utf-8")
    lm = (out / "lm_text.txt").read_text(encoding="utf-8")
    assert "In the beginning, God created the heavens and the earth." in lm and "EN el principio" in lm

    # a segmenter 0.05 s late everywhere (0.1 s before refinement), which dropped the mismatched
    # verses and one good one
    seg = tmp_path / "segment"
    seg.mkdir()
    lines = ["language\tchapter\tverse\tstart\tend\tconfidence\tkept\treason\tctc_start\tctc_end"]
    dropped_good = None
    for lang in ("eng", "spa"):
        for t in mms_bible._tsv(out / lang / "boundaries_true.tsv"):
            kept = t["mismatch"] != "1"
            if kept and dropped_good is None:
                dropped_good, kept = f"{t['chapter']}:{t['verse']}", False
            lines.append(f"{lang}\t{t['chapter']}\t{t['verse']}\t{float(t['start']) + 0.05}\t"
                         f"{float(t['end']) + 0.05}\t-0.5\t{int(kept)}\t\t{float(t['start']) - 0.1}\t"
                         f"{float(t['end']) + 0.1}")
    (seg / "segments.tsv").write_text("\n".join(lines) + "\n")
    result = mms_bible.score(out, seg)
    assert result["all"]["mae_s"] == pytest.approx(0.05, abs=1e-3)
    assert result["all"]["ctc_mae_s"] == pytest.approx(0.1, abs=1e-3)
    assert result["all"]["boundaries"] == 2 * (12 - 2 - 1)
    assert result["eng"]["correct_dropped"] == [dropped_good] and not result["eng"]["mismatched_kept"]
    assert len(result["spa"]["mismatched_dropped"]) == 1


# ---- the recipe through Snakemake (dry run) against a fake layout

def test_snakemake_dry_run_of_the_recipe(tmp_path):
    cfg = yaml.safe_load((ROOT / "egs/mms_bible/config.yaml").read_text())
    cfg.pop("local")  # the fake layout stands in for the generated corpus
    cfg["corpus"]["path"] = str(write_fake_layout(tmp_path / "corpus"))
    cfg["lm"]["text"] = str(tmp_path / "lm.txt")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                        f"--configfile={path}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    for rule in ("prepare", "cuts", "lang", "lm", "finetune_one", "decode_one", "score_one", "report"):
        assert rule in out, rule
    assert "test_eng.jsonl.gz" in out and "test_spa.jsonl.gz" in out
