"""Every recipe's whole workflow passes a Snakemake dry run against its fake corpus layout.

The dry runs go in parallel (each is a Snakemake process, ~5 s of start-up), one working
directory per recipe, all linking the same fake corpora at ``corpora/`` as the READMEs say.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import fake_layouts as fake

# recipe -> (config files, target, jobs that must be planned)
RUNS = {
    "librispeech_base": (["egs/librispeech/config.yaml"], "all", {"finetune_one": 5, "decode_one": 5}),
    "librispeech_large": (["egs/librispeech/config.yaml", "egs/librispeech/large.yaml"], "all", {"pretrain": 1}),
    "librispeech_large_lv60": (["egs/librispeech/config.yaml", "egs/librispeech/large_lv60.yaml"], "all",
                               {"pretrain": 1, "finetune_one": 5}),
    "wsj": (["egs/wsj/config.yaml"], "all", {"finetune_one": 2, "pretrain": 0}),
    "timit": (["egs/timit/config.yaml"], "all", {"finetune_one": 1, "pretrain": 0}),
    "commonvoice_pretrain": (["egs/commonvoice/pretrain.yaml", "cv_languages.yaml"], "pretrain", {"pretrain": 1}),
    "commonvoice_fr": (["egs/commonvoice/config.yaml", "egs/commonvoice/lang/fr.yaml"], "all",
                       {"finetune_one": 2, "pretrain": 0}),
    "babel_pretrain": (["egs/babel/pretrain.yaml", "babel_languages.yaml"], "pretrain", {"pretrain": 1}),
    "babel_106": (["egs/babel/config.yaml", "egs/babel/lang/106.yaml"], "all", {"finetune_one": 2, "pretrain": 0}),
}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    """The fake corpora at the paths the recipes name (``corpora/...``), plus the files they expect."""
    root = tmp_path_factory.mktemp("corpora")
    fake.librispeech(root)
    (root / "librispeech-lm-norm.txt").write_text("A TINY LM TEXT\n")
    fake.wsj(root / "wsj")
    fake.timit(root / "timit")
    fake.commonvoice(root / "commonvoice")
    for code in ("102", "106"):
        fake.babel(root / "babel" / code, code)
    return root


def _job_counts(out: str) -> dict[str, int]:
    counts = {}
    table = out.split("Job stats:")[-1]
    for line in table.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def _workdir(base: Path, corpora: Path, recipe: str) -> Path:
    work = base / recipe
    work.mkdir()
    (work / "corpora").symlink_to(corpora)
    # what fine-tuning recipes start from: another recipe's (or an imported) pre-trained model
    for cfg_rel in RUNS[recipe][0]:
        cfg = yaml.safe_load((fake.ROOT / cfg_rel).read_text()) if cfg_rel.startswith("egs/") else {}
        init = cfg.get("finetune", {}).get("init_from")
        if init:
            (work / init).parent.mkdir(parents=True, exist_ok=True)
            (work / init).write_bytes(b"")
    (work / "cv_languages.yaml").write_text(yaml.safe_dump(
        {"corpus": {"type": "commonvoice", "path": "corpora/commonvoice", "languages": ["es", "fr"]}}))
    (work / "babel_languages.yaml").write_text(yaml.safe_dump(
        {"corpus": [{"type": "babel", "path": f"corpora/babel/{c}"} for c in ("102", "106")]}))
    return work


def test_every_recipe_dry_runs(corpora, tmp_path):
    def one(recipe):
        configs, target, _ = RUNS[recipe]
        work = _workdir(tmp_path, corpora, recipe)
        return fake.dry_run([c if c.startswith("egs/") else work / c for c in configs], work, target=target)

    with ThreadPoolExecutor(4) as ex:
        results = dict(zip(RUNS, ex.map(one, RUNS)))
    for recipe, r in results.items():
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"{recipe}:\n{out[-3000:]}"
        counts = _job_counts(out)
        for job, n in RUNS[recipe][2].items():
            assert counts.get(job, 0) == n, f"{recipe}: {job} planned {counts.get(job, 0)} times, not {n}\n{out[-2000:]}"
        resolved = json.loads((tmp_path / recipe / f"exp/{recipe}/config.json").read_text())
        assert resolved["recipe"] == recipe


def test_dry_run_names_what_the_corpus_lacks(corpora, tmp_path):
    work = tmp_path / "w"
    (work / "corpora").mkdir(parents=True)
    (work / "corpora" / "timit").symlink_to(corpora / "wsj")  # the wrong corpus
    r = fake.dry_run(["egs/timit/config.yaml"], work)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "does not look like TIMIT" in out and "MISSING data/TRAIN/DR*/*/*.WAV" in out and "11-13.1/" in out


def test_librispeech_stages_make_the_official_subsets(corpora, tmp_path, monkeypatch):
    """`w2v prepare` and `w2v cuts` on the fake layout: train_10m/1h/10h are Libri-light's lists."""
    from lhotse import load_manifest

    from w2v.cli import main

    work = _workdir(tmp_path, corpora, "librispeech_base")
    monkeypatch.chdir(work)
    cfg = fake.ROOT / "egs/librispeech/config.yaml"
    main(["prepare", "--config", str(cfg), "--out", "m", "--jobs", "1"])
    main(["cuts", "--config", str(cfg), "--manifests", "m", "--out", "c"])
    ids = {name: sorted(c.id for c in load_manifest(f"c/{name}.jsonl.gz"))
           for name in ("train_10m", "train_1h", "train_10h", "train_100h", "train_960h", "dev_other", "pretrain")}
    assert ids["train_10m"] == ["104-7-0000", "201-9-0000"]
    assert len(ids["train_1h"]) == 12 and set(ids["train_10m"]) < set(ids["train_1h"]) < set(ids["train_10h"])
    assert len(ids["train_10h"]) == 14 and ids["train_100h"] == ["104-7-0000", "104-7-0001"]
    assert len(ids["train_960h"]) == 6 and ids["dev_other"] == ["101-7-0000", "101-7-0001"]
    assert len(ids["pretrain"]) == 6 + 13  # LS-960 audio + the fine-tuning utterances not in it
