"""Tiny fake copies of the corpora, in their real directory layouts and file formats.

Each writer returns what a test needs to check the manifests (ids, durations, texts). Audio is
a short tone; only headers and lengths matter to the preparations.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def write_audio(path: Path, seconds: float, sr: int = SR, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr), sr, **kwargs)


# ---------------------------------------------------------------- LibriSpeech + Libri-light

def _libri_chapter(part_dir: Path, spk: str, chap: str, utts: list[tuple[str, float, str]]) -> None:
    d = part_dir / spk / chap
    for uid, secs, _ in utts:
        write_audio(d / f"{uid}.flac", secs)
    (d / f"{spk}-{chap}.trans.txt").write_text("".join(f"{u} {t}\n" for u, _, t in utts))


def librispeech(root: Path) -> dict:
    """LibriSpeech (4 eval sets + 3 training parts), librispeech_finetuning and a Libri-light subset.

    Returns ``{"ls": path, "finetuning": path, "librilight": path, "utts": {id: (seconds, text, split)}}``.
    """
    ls, ft, ll = root / "LibriSpeech", root / "librispeech_finetuning", root / "librilight"
    utts: dict[str, tuple[float, str, str]] = {}
    for n, part in enumerate(("dev-clean", "dev-other", "test-clean", "test-other", "train-clean-100",
                              "train-clean-360", "train-other-500")):
        spk = str(100 + n)
        rows = [(f"{spk}-7-{i:04d}", 0.5 + 0.1 * i + 0.01 * n, f"WORD {part.upper()} {i}") for i in range(2)]
        _libri_chapter(ls / part, spk, "7", rows)
        utts |= {u: (s, t, part.replace("-", "_") if "train" not in part else "train") for u, s, t in rows}
    # fine-tuning folds: 1h/0..5/{clean,other} and 9h/{clean,other}, one utterance each;
    # the 1h/0/clean one is also a train-clean-100 utterance (same id, same audio)
    k = 0
    for part in [f"1h/{f}/{c}" for f in range(6) for c in ("clean", "other")] + ["9h/clean", "9h/other"]:
        spk = str(200 + k)
        if part == "1h/0/clean":
            _libri_chapter(ft / part, "104", "7", [("104-7-0000", utts["104-7-0000"][0], utts["104-7-0000"][1])])
        else:
            uid = f"{spk}-9-0000"
            _libri_chapter(ft / part, spk, "9", [(uid, 0.6, f"FOLD {part.upper()}")])
            utts[uid] = (0.6, f"FOLD {part.upper()}", "train")
        k += 1
    # Libri-light: small/<speaker>/<book>/<file>.flac with a .json beside it
    book = ll / "small" / "300" / "some_book_64kb"
    write_audio(book / "chapter_01.flac", 1.5)
    (book / "chapter_01.json").write_text(json.dumps({"speaker": "300", "voice_activity": [[0.1, 1.2]]}))
    return {"ls": ls, "finetuning": ft, "librilight": ll, "utts": utts}


# ---------------------------------------------------------------- running things on them

ROOT = Path(__file__).resolve().parents[2]


def run_prepare(corpus: dict | list[dict], out: Path) -> tuple[dict, dict]:
    """``w2v.data.ingest.prepare`` on a corpus config; recordings and supervisions by id."""
    from lhotse import RecordingSet, SupervisionSet

    from w2v.data.ingest import prepare

    paths = prepare(corpus, out, num_threads=1)
    recs = RecordingSet.from_file(paths["recordings"])
    sups = SupervisionSet.from_file(paths["supervisions"])
    return {r.id: r for r in recs}, {s.id: s for s in sups}


def dry_run(configs: list[Path], workdir: Path, overrides: list[str] = (), target: str = "all"):
    """``snakemake -n`` of a recipe's whole workflow (configs merged in order) in ``workdir``."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "-n", "-c1",
           "--configfile", *(str(c if Path(c).is_absolute() else ROOT / c) for c in configs)]
    if overrides:
        cmd += ["--config", *overrides]
    return subprocess.run([*cmd, "--", target], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- WSJ (LDC93S6B + LDC94S13B)

def write_sphere(path: Path, seconds: float, sr: int = SR) -> None:
    """Uncompressed NIST SPHERE (what a .wv1 is before shorten compression)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr), sr, format="NIST", subtype="PCM_16")


def shorten_stream(samples: np.ndarray, block: int = 256, energy: int = 12) -> bytes:
    """A Shorten v2 stream as NIST's embedded shorten writes it (no verbatim WAVE header).

    Mono 16-bit, ``FN_DIFF0`` blocks (the samples themselves, Rice-coded), then ``FN_QUIT``;
    ``len(samples)`` must be a multiple of ``block``.
    """
    from w2v.data.corpora.shorten import uvar_bits

    def ulong(v):
        k = v.bit_length()
        return uvar_bits(k, 2) + uvar_bits(v, k)

    bits = []
    for v in (5, 1, block, 0, 0, 0):  # type s16 lo-hi, channels, block size, max LPC, means, skip bytes
        bits += ulong(v)
    for start in range(0, len(samples), block):
        bits += uvar_bits(0, 2) + uvar_bits(energy, 3)  # FN_DIFF0, residual Rice parameter
        for v in samples[start:start + block].tolist():
            bits += uvar_bits(2 * v if v >= 0 else -2 * v - 1, energy + 1)
    bits += uvar_bits(4, 2)  # FN_QUIT
    return b"ajkg" + bytes([2]) + np.packbits(np.array(bits, dtype=np.uint8)).tobytes()


def write_shorten_sphere(path: Path, samples: np.ndarray, sr: int = SR) -> None:
    """A shorten-compressed SPHERE file, as WSJ's ``.wv1``."""
    fields = [f"sample_rate -i {sr}", f"sample_count -i {len(samples)}", "channel_count -i 1",
              "sample_n_bytes -i 2", "sample_byte_format -s2 01", "sample_coding -s26 pcm,embedded-shorten-v2.00"]
    head = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\nend_head\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head.ljust(1024, b" ") + shorten_stream(samples))


WSJ_UTTS = {  # id: (disc dir, path under it, seconds, .dot transcript, normalised text, split)
    "011c0201": ("11-2.1", "wsj0/si_tr_s/011", 0.7, "The [loud_breath] company's \\,COMMA *sales* rose ~ .",
                 "THE COMPANY'S COMMA SALES ROSE", "train"),
    "011c0202": ("11-2.1", "wsj0/si_tr_s/011", 0.8, "<In> fact [<door_slam] prices fell:", "IN FACT PRICES FELL", "train"),
    "46uc0301": ("13-2.1", "wsj1/si_tr_s/46u", 0.9, "Markets \"DOUBLE-QUOTE rallied [phone_ring/] today",
                 "MARKETS DOUBLE-QUOTE RALLIED TODAY", "train"),
    "4k0c0301": ("13-16.1", "wsj1/si_dt_20/4k0", 0.6, "Bonds were mixed .PERIOD", "BONDS WERE MIXED PERIOD", "dev93"),
    "440c0201": ("11-14.1", "wsj0/si_et_20/440", 0.55, "Stocks closed higher", "STOCKS CLOSED HIGHER", "test_eval92"),
}


def wsj(root: Path) -> Path:
    """WSJ0+WSJ1 discs: index files, .wv1 SPHERE audio, .dot transcripts, an LM text .z file."""
    for uid, (disc, d, secs, dot, _, _) in WSJ_UTTS.items():
        write_sphere(root / disc / d / f"{uid}.wv1", secs)
        with open(root / disc / d / f"{uid[:6]}00.dot", "a") as f:
            f.write(f"{dot} ({uid})\n")
    # listed but excluded (Kaldi: 11-2.1/wsj0/si_tr_s/401 is not on the discs)
    ndx = {
        "11-13.1/wsj0/doc/indices/train/tr_s_wv1.ndx": ";; SI-84\n11_2_1:wsj0/si_tr_s/011/011c0201.wv1\n"
                                                        "11_2_1:wsj0/si_tr_s/011/011c0202.wv1\n"
                                                        "11_2_1:wsj0/si_tr_s/401/401c0201.wv1\n",
        "13-34.1/wsj1/doc/indices/si_tr_s.ndx": ";; SI-200\n13_2_1:wsj1/si_tr_s/46u/46uc0301.wv1\n",
        "13-34.1/wsj1/doc/indices/h1_p0.ndx": "13_16_1:wsj1/si_dt_20/4k0/4k0c0301.wv1\n",
        "11-13.1/wsj0/doc/indices/test/nvp/si_et_20.ndx": ";; nov92\n11_14_1:wsj0/si_et_20/440/440c0201\n",
    }
    for rel, text in ndx.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    lm = root / "13-32.1/wsj1/doc/lng_modl/lm_train/np_data/87/w871231.z"
    lm.parent.mkdir(parents=True, exist_ok=True)
    import gzip
    lm.write_bytes(gzip.compress(b"<art.871231>\n<p>\n<s> THE DOW ROSE </s>\n<s> BONDS FELL </s>\n</p>\n"))
    return root


# ---------------------------------------------------------------- TIMIT (LDC93S1)

TIMIT_UTTS = {  # (set dir, dialect region, speaker, sentence): phones (61 set, with h# ends), words
    ("TRAIN", "DR1", "FCJF0", "SI1027"): ("h# sh iy hh ae dcl d h#", "She had."),
    ("TRAIN", "DR1", "FCJF0", "SA1"): ("h# dh ax q ae h#", "The a."),      # SA: left out
    ("TRAIN", "DR2", "MKLS0", "SX127"): ("h# w ax-h pau z ux h#", "Was too."),
    ("TEST", "DR1", "FAKS0", "SI943"): ("h# eh n iy w ey h#", "Anyway."),  # a dev speaker
    ("TEST", "DR1", "MDAB0", "SX139"): ("h# b r ay tcl t h#", "Bright."),  # a core test speaker
    ("TEST", "DR3", "MABC0", "SI1620"): ("h# ow k ey h#", "Okay."),        # neither: not used
}


def timit(root: Path, ldc_layout: bool = False) -> Path:
    """TIMIT as distributed (``data/TRAIN/DR1/FCJF0/SI1027.WAV`` + ``.TXT``/``.WRD``/``.PHN``).

    ``.WAV`` is NIST SPHERE at 16 kHz; every phone lasts 0.05 s, so the duration is known.
    """
    base = root if ldc_layout else root / "data"
    for (part, dr, spk, sent), (phones, words) in TIMIT_UTTS.items():
        d = base / part / dr / spk
        p = phones.split()
        n = int(0.05 * SR) * len(p)
        write_sphere(d / f"{sent}.WAV", n / SR)
        (d / f"{sent}.PHN").write_text("".join(f"{i * 800} {(i + 1) * 800} {x}\n" for i, x in enumerate(p)))
        ws = words.rstrip(".").split()
        (d / f"{sent}.WRD").write_text("".join(f"{800 * (i + 1)} {800 * (i + 2)} {w.lower()}\n"
                                               for i, w in enumerate(ws)))
        (d / f"{sent}.TXT").write_text(f"0 {n} {words}\n")
    return root


# ---------------------------------------------------------------- Common Voice

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"
CV_UTTS = {  # clip id: (language, split, client, seconds, sentence)
    "common_voice_es_001": ("es", "train", "c1", 0.6, "¿Qué tal, amigo?"),
    "common_voice_es_002": ("es", "train", "c2", 0.7, "El niño come."),
    "common_voice_es_003": ("es", "dev", "c3", 0.8, "Buenos días."),
    "common_voice_es_004": ("es", "test", "c4", 0.9, "Hasta luego."),
    "common_voice_fr_001": ("fr", "train", "d1", 0.65, "L'été est là."),
    "common_voice_fr_002": ("fr", "dev", "d2", 0.75, "Bonjour."),
    "common_voice_fr_003": ("fr", "test", "d3", 0.85, "Merci beaucoup."),
}


def commonvoice(root: Path) -> Path:
    """``<lang>/{train,dev,test}.tsv`` + ``<lang>/clips/<id>.mp3``, as a Common Voice release."""
    rows: dict[tuple[str, str], list[str]] = {}
    for cid, (lang, split, client, secs, text) in CV_UTTS.items():
        write_audio(root / lang / "clips" / f"{cid}.mp3", secs, sr=48000, format="MP3")
        rows.setdefault((lang, split), []).append(
            f"{client}\t{cid}.mp3\t{text}\t2\t0\ttwenties\tfemale\t\t\t{lang}\t")
    for lang in {k[0] for k in rows}:
        for split in ("train", "dev", "test"):
            (root / lang / f"{split}.tsv").write_text("\n".join([CV_HEADER, *rows.get((lang, split), [])]) + "\n")
    return root


# ---------------------------------------------------------------- BABEL

def _babel_conversation(conv: Path, split: str, name: str, seconds: float, segments: list[tuple[float, str]],
                        transcript_dir: str | None = None) -> None:
    write_sphere(conv / split / "audio" / f"{name}.sph", seconds, sr=8000)
    lines = []
    for start, text in segments:
        lines += [f"[{start:.3f}]", text]
    lines.append(f"[{seconds:.3f}]")
    for d in [split] + ([transcript_dir] if transcript_dir else []):
        (conv / d / "transcription").mkdir(parents=True, exist_ok=True)
        (conv / d / "transcription" / f"{name}.txt").write_text("\n".join(lines) + "\n")


def babel(root: Path, code: str = "101") -> Path:
    """``IARPA_BABEL_BP_<code>/conversational/{training,sub-train,dev,untranscribed-training}``, 8 kHz SPHERE."""
    conv = root / f"IARPA_BABEL_BP_{code}" / "conversational"
    a, b, c = (f"BABEL_BP_{code}_{spk}_20111024_205740_inLine" for spk in ("10033", "10034", "20001"))
    _babel_conversation(conv, "training", a, 3.0, [(0.0, "<no-speech>"), (0.5, "nei5 hou2 <breath> aa3"),
                                                     (2.0, "(()) m4 goi1")], transcript_dir="sub-train")
    _babel_conversation(conv, "training", b, 2.0, [(0.0, "hai6 aa3"), (1.2, "<cough>")])
    _babel_conversation(conv, "dev", c, 2.0, [(0.2, "zou2 san4")])
    write_sphere(conv / "untranscribed-training" / "audio" / f"BABEL_BP_{code}_30001_20111024_205740_inLine.sph",
                 1.0, sr=8000)
    return root / f"IARPA_BABEL_BP_{code}"
