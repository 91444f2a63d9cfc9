"""The report page: every figure drawn from the stages' outputs, missing pieces named, the
paper's numbers beside ours only where the setting matches, and the page renders in Chromium."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
import torch
from PIL import Image

from browser import find_browser, image_status
from report_fixtures import EXPS, decode_dir, finetune_log, full_experiment, score_records
from w2v.html_report import FIGURES, build_html_report, read_train_log, read_tuning
from w2v.report import group_rows, lm_kind, load_paper_results, paper_matches

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.width > 200 and im.height > 100, (path, im.size)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    x = full_experiment(root)
    out = x["exp"] / "report"
    summary = build_html_report(group_rows(x["records"]), out, exp_dir=x["exp"], cfg={"recipe": "synth"},
                                paper_rows=load_paper_results(), pretrained=x["model"], dev_cuts=x["cuts"],
                                codebook_utterances=3)
    return out, summary


def test_every_figure_is_a_png_the_page_shows(full_report):
    out, summary = full_report
    assert summary["missing"] == []
    assert set(summary["figures"]) == set(FIGURES)
    page = (out / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(srcs) == sorted(FIGURES)
    for name in FIGURES:
        _assert_png(out / name)
    assert "Not in this report" not in page
    assert json.loads((out / "report.json").read_text())["figures"] == summary["figures"]


def test_codebook_counts_are_consistent(full_report):
    stats = full_report[1]["codebook"]
    assert stats["groups"] == 2 and stats["vars"] == 8 and stats["utterances"] == 3
    for g in range(stats["groups"]):
        assert sum(stats["counts"][g]) == stats["frames"] > 0
        assert stats["used"][g] == sum(c > 0 for c in stats["counts"][g])
        assert 1.0 <= stats["perplexity"][g] <= stats["used"][g] + 1e-6


def test_results_table_has_the_paper_beside_matching_rows_only(full_report):
    page = (full_report[0] / "index.html").read_text()
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    by_setting = {tuple(re.findall(r"<td>(.*?)</td>", r)[i] for i in (0, 3, 4)): r for r in rows[1:]}
    assert "LARGE LL-60k: 5.2 test_clean / 8.6 test_other" in by_setting[("10m", "pretrained", "None")]
    assert "LL-60k" not in by_setting[("10m", "scratch", "None")]
    assert "LL-60k" not in by_setting[("1h", "pretrained", "4gram")]  # the paper quotes no 4-gram rows


def test_sweep_and_curves_read_from_the_experiment(full_report):
    sweeps = full_report[1]["sweeps"]
    assert len(sweeps) == len(EXPS)
    one = sweeps["pretrained_10m (4gram)"]
    assert len(one["table"]) == 9 and tuple(one["best"]) == (1.0, 0.0)
    assert one["source"].endswith("sweep.tsv")  # named by decode.json's "tuning"
    assert sweeps["scratch_10m (4gram)"]["source"].endswith("4gram/tuning.tsv")  # found beside the hypotheses


def test_missing_pieces_are_named_not_fatal(tmp_path):
    exp = tmp_path / "exp"
    out = exp / "report"
    out.mkdir(parents=True)
    (out / "codebook.png").write_bytes(b"stale")  # from an earlier report
    rows = group_rows(score_records(exps=[("pretrained", "10m"), ("pretrained", "1h")], decoders=("greedy",)))
    summary = build_html_report(rows, out, exp_dir=exp, cfg={"recipe": "x"}, pretrained=exp / "nope.pt")
    notes = "\n".join(summary["missing"])
    for what in ("Pre-training curves", "Fine-tuning curves", "LM-weight sweeps", "Codebook usage",
                 "from-scratch baseline"):
        assert what in notes, what
    assert set(summary["figures"]) == {"wer_vs_labeled.png"}
    assert not (out / "codebook.png").exists()
    page = (out / "index.html").read_text()
    assert "Not in this report" in page and re.findall(r'<img src="([^"]+)"', page) == ["wer_vs_labeled.png"]
    _assert_png(out / "wer_vs_labeled.png")


def test_nothing_at_all_still_makes_a_page(tmp_path):
    summary = build_html_report([], tmp_path / "r", exp_dir=tmp_path, cfg={"finetune": {"init_from": "x.pt"}})
    assert summary["figures"] == {}
    assert any("no scored systems" in n for n in summary["missing"])
    assert any("imported (x.pt)" in n for n in summary["missing"])
    assert "(no results yet)" in (tmp_path / "r" / "index.html").read_text()


def test_partial_log_line_skipped_and_noted(tmp_path):
    exp = tmp_path / "exp"
    finetune_log(exp / "finetune" / "scratch_1h" / "train_log.jsonl", 0.0)
    with open(exp / "finetune" / "scratch_1h" / "train_log.jsonl", "a") as f:
        f.write('{"update": 110, "lo')  # killed mid-write
    rows, bad = read_train_log(exp / "finetune" / "scratch_1h" / "train_log.jsonl")
    assert bad == 1 and rows[-1]["update"] == 100
    summary = build_html_report([], tmp_path / "r", exp_dir=exp)
    assert "train_finetune.png" in summary["figures"]
    assert any("1 unreadable line" in n for n in summary["missing"])


def test_unreadable_pieces_are_noted(tmp_path):
    exp = tmp_path / "exp"
    decode_dir(exp, "scratch_1h")
    (exp / "decode" / "scratch_1h" / "4gram" / "tuning.tsv").write_text("garbage\n")
    ctc = tmp_path / "ctc.pt"
    torch.save({"task": "finetune", "model": {}}, ctc)
    summary = build_html_report([], tmp_path / "r", exp_dir=exp, pretrained=ctc, dev_cuts=ctc)
    notes = "\n".join(summary["missing"])
    assert "LM sweep of scratch_1h 4gram" in notes and "expected a header" in notes
    assert "not a pre-trained model" in notes
    assert summary["figures"] == {}


def test_tuning_table_errors_name_the_file(tmp_path):
    decode_dir(tmp_path, "a")
    path = tmp_path / "decode" / "a" / "4gram" / "tuning.tsv"
    assert len(read_tuning(path)) == 9
    path.write_text("lm_weight\tword_score\twer_pct\n1\tx\t3\n")
    with pytest.raises(ValueError, match=r"tuning.tsv:2"):
        read_tuning(path)
    path.write_text("a\tb\n")
    with pytest.raises(ValueError, match="expected a header"):
        read_tuning(path)


@pytest.mark.parametrize("row,kind", [({"decoder": "greedy"}, "none"), ({"decoder": "4gram"}, "4-gram"),
                                      ({"lm": "4-gram"}, "4-gram"), ({"lm": "Transformer LM"}, "transformer"),
                                      ({"lm": "None"}, "none"), ({"decoder": "transformer_lm"}, "transformer")])
def test_lm_kind(row, kind):
    assert lm_kind(row) == kind


def test_paper_matches_setting():
    paper = load_paper_results()
    assert all(p["source"] == "wav2vec 2.0" and "seed" in p["note"] for p in paper)
    got = paper_matches({"labeled": "1h", "init": "pretrained", "decoder": "transformer"}, paper)
    assert [(p["model"], p["wer"]["test_clean"]) for p in got] == [("LARGE", 2.7)]
    assert {p["model"] for p in paper_matches({"labeled": "10m", "init": "pretrained", "decoder": "tlm"}, paper)} \
        == set()  # an unknown LM kind matches nothing
    assert paper_matches({"labeled": "1h", "init": "scratch", "decoder": "greedy"}, paper) == []
    assert paper_matches({"labeled": "lots", "init": "pretrained", "decoder": "greedy"}, paper) == []


def test_cli_report_embeds_figures_in_results_md(tmp_path, capsys):
    from w2v.cli import main

    x = full_experiment(tmp_path)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps(x["records"]))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("recipe: synth\ncorpus: {type: folder, path: c}\nmodel: tiny\n")
    md = x["exp"] / "results.md"
    main(["report", "--config", str(cfg), "--scores", str(scores), "--out-md", str(md),
          "--out-json", str(x["exp"] / "results.json"), "--pretrained", str(x["model"]), "--dev-cuts", str(x["cuts"]),
          "--codebook-utts", "2"])
    text = md.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f"report/{f}" for f in FIGURES)
    assert all((md.parent / link).is_file() for link in links)
    assert "## The paper's numbers (WER %)" in text and "| 10m | LARGE | LL-60k | wav2vec 2.0 | None | 5.2 | 8.6 |" \
        in text
    assert (x["exp"] / "report" / "index.html").is_file()


def test_report_page_renders_in_chromium(full_report, tmp_path):
    browser = find_browser()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("no headless Chromium in CI: scripts/setup.sh installs chromium-headless-shell")
        pytest.skip("no headless Chromium (chromium-headless-shell; scripts/setup.sh installs it)")
    status = image_status(full_report[0] / "index.html", browser)
    assert sorted(s["src"] for s in status) == sorted(FIGURES)
    assert all(s["complete"] and s["width"] > 0 for s in status), status
    # the check can fail: an image that does not load has no width
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img src="nothere.png"></body></html>')
    assert [s["width"] for s in image_status(broken, browser)] == [0]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
