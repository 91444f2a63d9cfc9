"""`w2v new-recipe`: the scaffold validates, its fake-layout test passes, and fails when prepare breaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from w2v import config as w2vconfig
from w2v.cli import main


REPO = Path(__file__).resolve().parents[2]


def _pytest(root, name):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"tests/recipes/test_{name}.py"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_scaffold_passes_then_catches_a_broken_prepare(tmp_path, monkeypatch, capsys):
    main(["new-recipe", "toy_corpus", "--root", str(tmp_path)])
    written = capsys.readouterr().out.split()
    assert sorted(p.replace(str(tmp_path) + "/", "") for p in written) == [
        "egs/toy_corpus/README.md", "egs/toy_corpus/RESULTS.md", "egs/toy_corpus/config.yaml",
        "local/toy_corpus.py", "tests/recipes/test_toy_corpus.py"]
    monkeypatch.chdir(tmp_path)  # local/ of the working directory: the new corpus type is known
    cfg = w2vconfig.load(tmp_path / "egs/toy_corpus/config.yaml")
    assert cfg["corpus"]["type"] == "toy_corpus"

    r = _pytest(tmp_path, "toy_corpus")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout
    local = tmp_path / "local/toy_corpus.py"
    local.write_text(local.read_text().replace("split, speaker, utt = txt.parent.parent.name, txt.parent.name",
                                               "speaker, split, utt = txt.parent.parent.name, txt.parent.name"))
    r = _pytest(tmp_path, "toy_corpus")
    assert r.returncode != 0 and "1 failed" in r.stdout

    with pytest.raises(SystemExit, match="would overwrite"):
        main(["new-recipe", "toy_corpus", "--root", str(tmp_path)])
    with pytest.raises(SystemExit, match="lower-case"):
        main(["new-recipe", "Toy-Corpus", "--root", str(tmp_path)])
