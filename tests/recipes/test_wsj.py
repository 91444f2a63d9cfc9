"""WSJ preparation on a fake layout of the LDC discs (local/wsj.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import fake_layouts as fake
from w2v.data.corpora import load, sphere
from w2v.data.ingest import CorpusError

wsj = load("wsj")


def test_manifests_sets_texts_and_lm_text(tmp_path):
    root = fake.wsj(tmp_path / "wsj")
    lm = tmp_path / "lm" / "wsj_lm.txt"
    recs, sups = fake.run_prepare({"type": "wsj", "path": str(root), "lm_text": str(lm)}, tmp_path / "m")
    assert set(sups) == set(fake.WSJ_UTTS)  # 401c0201 is listed but excluded, as in Kaldi
    for uid, (disc, _, secs, _, text, split) in fake.WSJ_UTTS.items():
        assert sups[uid].text == text and sups[uid].custom["split"] == split and sups[uid].speaker == uid[:3]
        assert sups[uid].custom.get("subsets") == ({"11-2.1": ["si84", "si284"], "13-2.1": ["si284"]}.get(disc))
        assert recs[uid].duration == pytest.approx(secs) and recs[uid].sources[0].type == "file"
        assert recs[uid].load_audio().shape == (1, round(secs * 16000))
    assert lm.read_text() == "THE DOW ROSE\nBONDS FELL\n"


def test_normalisation_as_kaldi():
    assert wsj.normalize_wsj("[<door_slam] The [lip_smack] *tomatoe* <of> ~ . \\.PERIOD I'm:") == \
        "THE TOMATOE OF PERIOD I'M"
    assert wsj.normalize_wsj("[phone_ring/] it's [/phone_ring] \\-HYPHEN {LEFT-BRACE") == "IT'S HYPHEN LEFT-BRACE"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg decodes SPHERE here")
def test_shorten_decodes_through_ffmpeg(tmp_path, monkeypatch):
    x = np.random.default_rng(0).integers(-3000, 3000, 4 * 256)
    path = tmp_path / "a b" / "x.wv1"  # a space: the command must quote the path
    fake.write_shorten_sphere(path, x)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/ffmpeg" if name == "ffmpeg" else None)
    rec = sphere.sphere_recording(path, "x")
    src = rec.sources[0]
    assert src.type == "command" and "w2v.data.corpora.shorten" in src.source and "ffmpeg" in src.source
    assert rec.duration == 1024 / 16000 and rec.num_samples == 1024
    np.testing.assert_array_equal(np.round(rec.load_audio()[0] * 32768).astype(int), x)  # bit-exact
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert sphere.sphere_recording(path, "x").sources[0].source.startswith("sph2pipe -f wav")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match="install ffmpeg"):
        sphere.sphere_recording(path, "x")
    monkeypatch.undo()
    fake.write_sphere(plain := tmp_path / "plain.wv1", 0.25)
    assert sphere.sphere_recording(plain, "p").sources[0].type == "file"
    fake.write_sphere(sph := tmp_path / "plain.sph", 0.25)  # lhotse would want sph2pipe for *.sph
    rec = sphere.sphere_recording(sph, "s")
    assert rec.sources[0].type == "command" and rec.load_audio().shape == (1, 4000)


def test_missing_index_files_are_listed(tmp_path):
    root = fake.wsj(tmp_path / "wsj")
    shutil.rmtree(root / "13-34.1")
    with pytest.raises(CorpusError) as e:
        fake.run_prepare({"type": "wsj", "path": str(root)}, tmp_path / "m")
    msg = str(e.value)
    assert "MISSING 13-34.1/wsj1/doc/indices/h1_p0.ndx" in msg and "found   11-13.1/wsj0/doc" in msg
    assert "Found in" in msg and "11-13.1/" in msg and "11-2.1/" in msg


def test_shorten_transcoder_rejects_other_data(tmp_path):
    from w2v.data.corpora.shorten import with_riff_header

    fake.write_sphere(plain := tmp_path / "plain.wv1", 0.1)
    with pytest.raises(ValueError, match="no shorten stream"):
        with_riff_header(plain)
    (bad := tmp_path / "bad.wv1").write_bytes(b"RIFF....")
    with pytest.raises(ValueError, match="not a NIST SPHERE"):
        with_riff_header(bad)
