import json

import pytest

from w2v.report import collect, parse_duration, write_report
from w2v.score.wer import score, write_score_json


def _write(tmp_path, labeled, init, decoder, test_set, hyp, lm=None):
    meta = {"model": "BASE", "pretrain_data": "LS-960", "labeled": labeled, "init": init,
            "decoder": decoder, "lm": lm, "test_set": test_set,
            "lm_weight": 2.0 if lm else None, "word_score": -1.0 if lm else None}
    path = tmp_path / f"{labeled}-{init}-{decoder}-{test_set}.json"
    write_score_json(score({"u": "A B C D"}, {"u": hyp}), path, meta)
    return path


@pytest.mark.parametrize("text,hours", [("10m", 1 / 6), ("1h", 1.0), ("960h", 960.0),
                                        ("30 min", 0.5), ("1.5hr", 1.5)])
def test_parse_duration(text, hours):
    assert parse_duration(text) == pytest.approx(hours)


def test_parse_duration_rejects_garbage():
    with pytest.raises(ValueError, match="duration"):
        parse_duration("lots")


def test_rows_sorted_and_merged(tmp_path):
    paths = [
        _write(tmp_path, "100h", "pretrained", "greedy", "test_other", "A B C"),
        _write(tmp_path, "10h", "scratch", "greedy", "test_clean", "A B C D E"),
        _write(tmp_path, "10m", "pretrained", "4gram", "test_clean", "A B C D", lm="4-gram"),
        _write(tmp_path, "10m", "pretrained", "greedy", "test_clean", "A X C D"),
        _write(tmp_path, "10h", "pretrained", "greedy", "test_clean", "A B"),
        _write(tmp_path, "100h", "pretrained", "greedy", "test_clean", "A B C D"),
        _write(tmp_path, "100h", "pretrained", "greedy", "dev_other", "A B C D"),
    ]
    rows = collect(paths)
    order = [(r["labeled"], r["init"], r["decoder"]) for r in rows]
    assert order == [("10m", "pretrained", "greedy"), ("10m", "pretrained", "4gram"),
                     ("10h", "pretrained", "greedy"), ("10h", "scratch", "greedy"),
                     ("100h", "pretrained", "greedy")]
    assert set(rows[-1]["results"]) == {"test_clean", "test_other", "dev_other"}
    assert rows[0]["results"]["test_clean"]["wer_pct"] == 25.0
    assert rows[1]["results"]["test_clean"]["lm_weight"] == 2.0

    paper = [{"model": "BASE", "pretrain_data": "LS-960", "labeled": "10m", "lm": "4-gram",
              "wer": {"test_clean": 5.2, "test_other": 8.6}, "source": "Table 9"}]
    md, js = tmp_path / "results.md", tmp_path / "results.json"
    write_report(rows, md, js, paper_rows=paper, run_info={"recipe": "librispeech"})
    lines = md.read_text().splitlines()
    assert lines[0] == "# Results" and "- **recipe**: librispeech" in lines
    header = next(l for l in lines if l.startswith("| Labeled"))
    assert header == ("| Labeled | Model | Pre-training data | Init | LM | dev_other WER | "
                      "dev_other CER | test_clean WER | test_clean CER | test_other WER | "
                      "test_other CER |")
    table = [l for l in lines if l.startswith("| 1")]
    assert table[0] == "| 10m | BASE | LS-960 | pretrained | None | – | – | 25.0 | 14.3 | – | – |"
    assert table[1].startswith("| 10m | BASE | LS-960 | pretrained | 4gram | – | – | 0.0 |")
    assert table[4].startswith("| 100h | BASE | LS-960 | pretrained | None | 0.0 | 0.0 | 0.0 |")
    paper_at = lines.index("## The paper's numbers (WER %)")
    assert lines[paper_at + 4] == "| 10m | BASE | LS-960 | Table 9 | 4-gram | 5.2 | 8.6 |"
    data = json.loads(js.read_text())
    assert data["test_sets"] == ["dev_other", "test_clean", "test_other"]
    assert len(data["rows"]) == 5 and data["paper_rows"] == paper


def test_duplicate_cell_is_an_error(tmp_path):
    a = _write(tmp_path, "10m", "pretrained", "greedy", "test_clean", "A")
    b = tmp_path / "copy.json"
    b.write_text(a.read_text())
    with pytest.raises(ValueError, match="both score test_clean"):
        collect([a, b])


def test_missing_meta_named(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"meta": {"model": "BASE"}, "wer": 0.1}))
    with pytest.raises(ValueError, match="meta lacks"):
        collect([p])


def test_flat_records_list_file_and_cfg(tmp_path):
    # The score stage may write one file per experiment holding a list of flat records.
    base = {"model": "tiny", "pretrain_data": "demo pretrain", "labeled": "1h",
            "init": "pretrained", "lm_weight": None, "word_score": None, "lm": "none"}
    records = [{**base, "decoder": "greedy", "test_set": "test", "wer": 0.5, "cer": 0.25},
               {**base, "decoder": "greedy", "test_set": "dev", "wer": 0.4, "cer": 0.2},
               {**base, "decoder": "4gram", "lm": "lm.bin", "lm_weight": 1.0,
                "word_score": 0.0, "test_set": "test", "wer": 0.3, "cer": 0.2}]
    p = tmp_path / "scores.json"
    p.write_text(json.dumps(records))
    rows = collect([p])
    assert [r["decoder"] for r in rows] == ["greedy", "4gram"]
    assert rows[0]["results"]["dev"]["wer_pct"] == pytest.approx(40.0)
    md = tmp_path / "results.md"
    cfg = {"recipe": "demo", "description": "espeak KJV",
           "paper": [{"model": "BASE", "labeled": "1h", "lm": "None", "wer": {"test": 24.5}}]}
    write_report(records, md, tmp_path / "results.json", cfg=cfg)
    text = md.read_text()
    assert text.startswith("# Results: demo\n") and "- **description**: espeak KJV" in text
    assert "| 1h | tiny | demo pretrain | pretrained | None | 40.0 | 20.0 | 50.0 | 25.0 |" in text
    assert "| 1h | BASE | None |  | None | 24.5 |" in text
