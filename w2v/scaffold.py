"""``w2v new-recipe NAME``: the files of a new corpus recipe, ready to edit.

Writes ``egs/NAME/{config.yaml,README.md,RESULTS.md}``, ``local/NAME.py`` (the corpus type:
a ``check`` and a ``prepare`` function, see :mod:`w2v.data.corpora`) and
``tests/recipes/test_NAME.py`` (a fake-layout test that passes as generated and fails when
``prepare`` stops producing the manifests it checks). The generated preparation reads a simple
layout, ``<path>/<split>/<speaker>/<utt>.wav`` with ``<utt>.txt`` beside each file; the
README's "Adding a corpus" says what to change for a real corpus.
"""

from __future__ import annotations

import re
from pathlib import Path

from w2v.io import write_text

__all__ = ["new_recipe"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

CONFIG = '''\
# {name}: <one line on the corpus and the paper's setting this recipe reproduces>.
# Corpus paths are links under corpora/ in the working directory (see README.md).
recipe: {name}
description: <what the rows of RESULTS.md are>
corpus:
  type: {name}                      # local/{name}.py
  path: corpora/{name}
cuts:
  labeled_subsets: [10m, 1h]        # durations carved from train, or subsets the corpus defines
  min_duration: 0.5
  max_duration: 30.0
text: {{normalize: upper_letters}}  # or letters (any script)
lm:
  order: 4                          # of the training transcripts; lm.text: a larger text
model: base                         # conf/model/<name>.yaml
device: auto
pretrain:
  max_updates: 400000
  lr: 5.0e-4
  warmup: 32000
  max_duration: 87.5
finetune:
  settings:
    schedule: tri_stage
    lr: 5.0e-5
    freeze_feature_encoder: true
    freeze_transformer_updates: 10000
    model_overrides: {{mask_prob: 0.65, mask_channel_prob: 0.25, mask_channel_length: 64, layerdrop: 0.05}}
  subsets:
    10m: {{max_updates: 13000}}
    1h: {{max_updates: 13000}}
  scratch: false
decode:
  dev_set: dev
  test_sets: [test]
  beam: 500
  lm_weights: [0.5, 1.0, 2.0]
  word_scores: [-1.0, 0.0, 1.0]
'''

README = '''\
# {name}

<What the corpus is, who distributes it, its licence, and which paper's setting this recipe follows.>

## Getting the corpus

<Where to obtain it (catalogue number / URL).> Link your copy where the recipe looks for it:

```bash
mkdir -p corpora && ln -s /data/{name} corpora/{name}
```

## Layout expected

```
corpora/{name}/
  train/<speaker>/<utt>.wav   <utt>.txt   # one transcript line beside each audio file
  dev/<speaker>/...
  test/<speaker>/...
```

`local/{name}.py` reads it; `snakemake -n` checks it first and lists what is missing.

## Commands

```bash
snakemake -c16 --configfile=egs/{name}/config.yaml prepare   # corpus -> manifests
snakemake -c16 --configfile=egs/{name}/config.yaml           # everything, results in exp/{name}/results.md
```

## Disk and compute

<Corpus size on disk; hours of audio; GPU-hours of pre-training and fine-tuning.>
'''

RESULTS = '''\
# {name}: results

## The paper's numbers

<Table of the published numbers this recipe reproduces, with their source.>

## Ours

Not run here: <the corpus is licensed / not downloadable from where w2v is developed>. To
produce them: `snakemake -c16 --configfile=egs/{name}/config.yaml` (table in `exp/{name}/results.md`);
paste it here with the command, the date and the hardware.
'''

LOCAL = '''\
"""{name}: <the corpus> -> lhotse recordings and supervisions (corpus type ``{name}``).

Recipe config::

    corpus: {{type: {name}, path: corpora/{name}}}

Layout read (edit :func:`prepare` and :data:`EXPECTED` for the corpus's real one)::

    <path>/<split>/<speaker>/<utt>.wav    audio, any format soundfile reads
    <path>/<split>/<speaker>/<utt>.txt    its transcript, one line

``split`` is ``train``, ``dev`` or ``test`` (any ``dev*``/``test*`` name is an evaluation set);
utterance ids (file stems) must be unique across the corpus.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import Recording, SupervisionSegment

from w2v.data.corpora import check_options, corpus_root, expect

OPTIONS: tuple[str, ...] = ()  # corpus keys besides type and path that this preparation reads
EXPECTED = {{
    "train/*/*.txt": "training transcripts",
    "dev/*/*.txt": "development transcripts",
    "test/*/*.txt": "test transcripts",
}}
AUDIO = (".wav", ".flac")


def check(corpus: dict, key: str) -> None:
    """Fail early, listing what was expected and what was found under ``corpus.path``."""
    check_options(corpus, key, OPTIONS)
    expect(corpus_root(corpus, key), key, EXPECTED, "{name}")


def prepare(corpus: dict, key: str, num_threads: int) -> tuple[list[Recording], list[SupervisionSegment]]:
    """Recordings and supervisions (with ``custom["split"]``) of every transcribed audio file."""
    check(corpus, key)
    root = Path(corpus["path"]).expanduser()
    recs, sups = [], []
    for txt in sorted(root.glob("*/*/*.txt")):
        split, speaker, utt = txt.parent.parent.name, txt.parent.name, txt.stem
        audio = next((txt.with_suffix(ext) for ext in AUDIO if txt.with_suffix(ext).is_file()), None)
        if audio is None:
            continue
        rec = Recording.from_file(audio, recording_id=utt)
        recs.append(rec)
        sups.append(SupervisionSegment(id=utt, recording_id=utt, start=0.0, duration=rec.duration, channel=0,
                                       text=txt.read_text(encoding="utf-8").strip(), speaker=speaker,
                                       custom={{"split": split}}))
    return recs, sups
'''

TEST = '''\
"""{name} preparation on a fake layout (local/{name}.py): written by `w2v new-recipe {name}`.

Make the fixture write a few files in the corpus's real layout and formats, and check what
``prepare`` must produce from them.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from lhotse import RecordingSet, SupervisionSet

from w2v.data.ingest import CorpusError, prepare

UTTS = {{  # id: (split, speaker, seconds, text)
    "a-001": ("train", "a", 0.6, "HELLO WORLD"),
    "a-002": ("train", "a", 0.7, "GOOD MORNING"),
    "b-001": ("dev", "b", 0.8, "GOOD NIGHT"),
    "c-001": ("test", "c", 0.9, "SEE YOU"),
}}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "{name}"
    for utt, (split, spk, secs, text) in UTTS.items():
        d = root / split / spk
        d.mkdir(parents=True, exist_ok=True)
        sf.write(d / f"{{utt}}.wav", np.zeros(int(secs * 16000), dtype=np.float32), 16000)
        (d / f"{{utt}}.txt").write_text(text + "\\n")
    return root


def test_manifests(corpus, tmp_path):
    paths = prepare({{"type": "{name}", "path": str(corpus)}}, tmp_path / "m", num_threads=1)
    recs = {{r.id: r for r in RecordingSet.from_file(paths["recordings"])}}
    sups = {{s.id: s for s in SupervisionSet.from_file(paths["supervisions"])}}
    assert set(sups) == set(UTTS)
    for utt, (split, spk, secs, text) in UTTS.items():
        assert (sups[utt].custom["split"], sups[utt].speaker, sups[utt].text) == (split, spk, text)
        assert recs[utt].duration == pytest.approx(secs)


def test_missing_parts_are_listed(corpus, tmp_path):
    import shutil

    shutil.rmtree(corpus / "test")
    with pytest.raises(CorpusError, match="MISSING test/"):
        prepare({{"type": "{name}", "path": str(corpus)}}, tmp_path / "m", num_threads=1)
'''


def new_recipe(name: str, root: Path) -> list[Path]:
    """Write the files of recipe ``name`` under the repository ``root``; never overwrite.

    Returns:
        The files written.

    Raises:
        ValueError: a bad name, or any of the files exists already.
    """
    if not _NAME.match(name):
        raise ValueError(f"recipe name {name!r}: use lower-case letters, digits and _ (it is a Python module name)")
    files = {
        root / "egs" / name / "config.yaml": CONFIG,
        root / "egs" / name / "README.md": README,
        root / "egs" / name / "RESULTS.md": RESULTS,
        root / "local" / f"{name}.py": LOCAL,
        root / "tests" / "recipes" / f"test_{name}.py": TEST,
    }
    existing = [str(p) for p in files if p.exists()]
    if existing:
        raise ValueError(f"new-recipe {name}: would overwrite {', '.join(existing)}")
    for path, template in files.items():
        write_text(path, template.format(name=name))
    return list(files)
