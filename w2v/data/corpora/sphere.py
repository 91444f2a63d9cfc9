"""NIST SPHERE audio (WSJ, TIMIT, BABEL) as lhotse recordings, without decoding at preparation.

The header gives rate and length. Shorten-compressed files (WSJ's ``.wv1``) and any ``*.sph``
(which lhotse hands to ``sph2pipe`` whatever its coding) become "command" sources decoded on the
fly by ``sph2pipe`` when it is on PATH, else by ``ffmpeg`` (a Debian package; lhotse's own
``install-sph2pipe`` downloads, which many clusters cannot). ffmpeg's SPHERE demuxer does not
know embedded shorten, and its shorten decoder needs a WAVE header NIST's streams lack:
:mod:`w2v.data.corpora.shorten` inserts one and pipes the stream to ``ffmpeg -f shn``. Other
SPHERE files are read by libsndfile directly.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

from lhotse import AudioSource, Recording

from w2v.data.corpora import CorpusError

__all__ = ["sphere_header", "sphere_recording"]


def sphere_header(path: Path) -> dict[str, str]:
    """The NIST SPHERE header fields (``sample_count`` ...) as strings."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        raise CorpusError(f"{path}: not a NIST SPHERE file (no NIST_1A header)")
    size = int(head.split(b"\n")[1])
    if size > 1024:
        with open(path, "rb") as f:
            head = f.read(size)
    fields = {}
    for line in head.decode("latin-1").split("\n")[2:]:
        if line.strip() == "end_head":
            break
        parts = line.split(None, 2)
        if len(parts) == 3:
            fields[parts[0]] = parts[2].strip()
    return fields


def sphere_recording(path: Path, rec_id: str) -> Recording:
    """A lhotse recording of a SPHERE file; shorten-compressed ones decode through a command."""
    h = sphere_header(path)
    try:
        sr, n, ch = int(h["sample_rate"]), int(h["sample_count"]), int(h.get("channel_count", 1))
    except (KeyError, ValueError):
        raise CorpusError(f"{path}: SPHERE header lacks sample_rate/sample_count: {h}") from None
    shorten = "shorten" in h.get("sample_coding", "")
    quoted = shlex.quote(str(path.resolve()))
    sph2pipe, ffmpeg = shutil.which("sph2pipe"), shutil.which("ffmpeg")
    # lhotse reads any *.sph through sph2pipe; libsndfile reads other uncompressed SPHERE
    if not shorten and (sph2pipe or path.suffix.lower() != ".sph"):
        source = AudioSource(type="file", channels=list(range(ch)), source=str(path.resolve()))
    elif sph2pipe:
        source = AudioSource(type="command", channels=list(range(ch)), source=f"sph2pipe -f wav -p {quoted}")
    elif ffmpeg and shorten:  # ffmpeg's shorten decoder wants a WAVE header in the stream: w2v adds it
        source = AudioSource(type="command", channels=list(range(ch)),
                             source=f"{shlex.quote(sys.executable)} -m w2v.data.corpora.shorten {quoted} | "
                                    "ffmpeg -nostdin -loglevel error -f shn -i - -f wav -")
    elif ffmpeg:
        source = AudioSource(type="command", channels=list(range(ch)),
                             source=f"ffmpeg -nostdin -loglevel error -i {quoted} -f wav -")
    else:
        raise CorpusError(f"{path}: {'shorten-compressed ' if shorten else ''}SPHERE needs a decoder: "
                          "install ffmpeg (apt-get install ffmpeg) or sph2pipe")
    return Recording(id=rec_id, sources=[source], sampling_rate=sr, num_samples=n, duration=n / sr)
