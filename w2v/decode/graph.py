"""The ``graph`` stage: H (CTC topology), L (lexicon), G (n-gram) -> ``HLG.fst`` (kaldifst, kaldilm).

The path icefall takes for CPU decoding without k2: OpenFst operations through kaldifst, the
ARPA -> FST conversion through kaldilm (Kaldi's ``arpa2fst``), decoding with kaldi-decoder.

Symbol spaces (``tokens.txt``, ``words.txt`` beside ``HLG.fst``):

* tokens: 0 = ``<eps>``, CTC unit ``k`` of ``units.txt`` is token ``k + 1`` (kaldi-decoder's
  ``DecodableCtc`` reads log-prob column ``token - 1``), then the disambiguation symbols
  ``#0, #1, ...`` (on L's input side only; they are removed from LG before H is composed).
* words: 0 = ``<eps>``, the lexicon's words in ``words.txt`` order, then ``<unk>``, ``#0``
  (G's back-off arcs), ``<s>``, ``</s>``.
* ``lexicon.txt``: each word's spelling in units (no separator), for rescoring's CTC scores.

H is the standard CTC topology (one state per unit; a unit is emitted when the path enters its
state from another one; blank and repeats emit nothing). L spells each word in the model's
units. With character units the word separator ``|`` is a unit of its own: L reads it
*between* words (never required at the ends, as ``w2v.data.lang.encode`` never puts one
there); with BPE or phone units words follow each other directly. Identical spellings and
spellings that are prefixes of others get ``#1, #2...`` so that L∘G determinizes. G comes from
an ARPA file, optionally cut to a lower order (``max_order``): the pruned first-pass LM, with a
larger n-gram left to n-best rescoring.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from w2v.decode.ctc import WORD_SEP, load_units
from w2v.io import atomic_path, write_json, write_text

__all__ = ["HLG_FILES", "add_disambig", "build_hlg", "load_hlg", "make_ctc_topo", "make_g", "make_lexicon_fst",
           "read_lexicon"]

log = logging.getLogger(__name__)

HLG_FILES = ("HLG.fst", "words.txt", "tokens.txt", "lexicon.txt", "graph.json")
UNK = "<unk>"


def read_lexicon(path: str | Path, units: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``lexicon.txt`` as ``[(word, [unit, ...]), ...]`` in file order, duplicates dropped.

    A trailing word separator (``WORD W O R D |``, the character lexicon's form, shared with
    the flashlight decoder) is dropped: L places ``|`` between words itself.

    Raises:
        ValueError: naming file and line, for an empty spelling or a unit not in ``units``.
    """
    from w2v.decode.lexicon import load_lexicon  # the one lexicon.txt reader (flashlight's too)

    out, seen = [], set()
    for word, spellings in load_lexicon(path, units, word_sep=None).items():
        for spelling in spellings:
            if spelling[-1] == WORD_SEP:
                spelling = spelling[:-1]
            if not spelling:
                raise ValueError(f"{path}: {word!r} has no spelling")
            if (word, tuple(spelling)) not in seen:
                seen.add((word, tuple(spelling)))
                out.append((word, spelling))
    return out


def add_disambig(lexicon: Sequence[tuple[str, list[str]]]) -> tuple[list[tuple[str, list[str], int]], int]:
    """Kaldi's ``add_lex_disambig``: a spelling shared by several words, or that is a proper
    prefix of another spelling, gets ``#1``, ``#2``... (0 = none).

    Returns:
        ``([(word, spelling, disambig), ...], highest disambig used)``.
    """
    counts = Counter(tuple(s) for _, s in lexicon)
    prefixes = {tuple(s[:i]) for _, s in lexicon for i in range(1, len(s))}
    next_id: dict[tuple, int] = {}
    out = []
    for word, s in lexicon:
        key = tuple(s)
        d = 0
        if counts[key] > 1 or key in prefixes:
            d = next_id[key] = next_id.get(key, 0) + 1
        out.append((word, list(s), d))
    return out, max((d for *_, d in out), default=0)


def _fst_from_arcs(arcs: Sequence[tuple], finals: Sequence[int]):
    """A StdVectorFst from ``(src, dst, ilabel, olabel, weight)`` arcs; state 0 starts."""
    import kaldifst

    lines = [f"{s}\t{d}\t{i}\t{o}\t{w}" for s, d, i, o, w in arcs] + [str(f) for f in finals]
    return kaldifst.compile("\n".join(lines) + "\n")


def make_ctc_topo(num_units: int):
    """H: the standard CTC topology over units ``0..num_units-1`` (0 = blank), token = unit + 1.

    Input labels are tokens (what the decoder scores), output labels are tokens, epsilon for
    blank and for a unit repeated without a blank in between. Every state is final.
    """
    arcs = []
    for s in range(num_units):
        for d in range(num_units):
            emit = 0 if d == 0 or d == s else d + 1
            arcs.append((s, d, d + 1, emit, 0.0))
    return _fst_from_arcs(arcs, range(num_units))


def make_lexicon_fst(lexicon: Sequence[tuple[str, list[str], int]], token_id: dict[str, int],
                     word_id: dict[str, int], first_disambig: int, word_sep: str | None):
    """L with disambiguation symbols: tokens (input) -> words (output).

    State 0 starts every word; a word's first arc outputs it. Without a word separator the
    spellings return to state 0 (which is final). With one they end in state 1 (final), which
    goes back to 0 on ``word_sep``. ``#0:#0`` self-loops on both let G's back-off pass.
    """
    end = 0 if word_sep is None else 1
    arcs: list[tuple] = []
    n_states = end + 1
    for word, spelling, d in lexicon:
        labels = [token_id[u] for u in spelling] + ([first_disambig + d] if d else [])
        src = 0
        for k, lab in enumerate(labels):
            dst = end if k == len(labels) - 1 else n_states
            if dst == n_states:
                n_states += 1
            arcs.append((src, dst, lab, word_id[word] if k == 0 else 0, 0.0))
            src = dst
    if word_sep is not None:
        arcs.append((1, 0, token_id[word_sep], 0, 0.0))
    for s in range(end + 1):
        arcs.append((s, s, first_disambig, word_id["#0"], 0.0))
    return _fst_from_arcs(arcs, range(end + 1))


def make_g(arpa: str | Path, words_txt: str | Path, max_order: int = -1):
    """G from an ARPA file (kaldilm): back-off arcs read ``#0``, ``<s>``/``</s>`` become epsilon.

    Weights are natural-log costs (Kaldi's convention), unlike KenLM's log10 scores.
    N-grams whose words are missing from ``words_txt`` are dropped by arpa2fst.
    """
    import kaldifst
    import kaldilm

    with tempfile.TemporaryDirectory(prefix="w2v-g-") as tmp:
        out = Path(tmp) / "G.fst"
        kaldilm.arpa2fst(str(arpa), str(out), disambig_symbol="#0", read_symbol_table=str(words_txt),
                         max_order=max_order, max_arpa_warnings=0)
        return kaldifst.StdVectorFst.read(str(out))


def _arpa_words(arpa: Path) -> list[str]:
    """The unigram vocabulary of an ARPA file."""
    words, in_unigrams = [], False
    with open(arpa, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                if in_unigrams:
                    break
                in_unigrams = line == "\\1-grams:"
                continue
            if in_unigrams and line:
                words.append(line.split()[1])
    return words


def _relabel_inputs(fst, first_disambig: int):
    """Disambiguation symbols (input labels >= ``first_disambig``) -> epsilon."""
    import kaldifst

    lines = []
    for line in str(fst).splitlines():
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) >= 4 and int(cols[2]) >= first_disambig:
            cols[2] = "0"
        lines.append("\t".join(cols))
    return kaldifst.compile("\n".join(lines) + "\n")


def build_hlg(units_path: str | Path, lexicon_path: str | Path, arpa_path: str | Path, out_dir: str | Path,
              max_order: int = -1) -> dict:
    """Write ``HLG.fst``, ``words.txt``, ``tokens.txt`` and ``graph.json`` (sizes, OOV counts).

    Args:
        units_path: the model's ``units.txt``.
        lexicon_path: ``lexicon.txt`` spelled in those units.
        arpa_path: the first-pass n-gram (ARPA).
        out_dir: output directory; each file appears atomically, ``graph.json`` last.
        max_order: use n-grams up to this order only (-1: all).

    Returns:
        The ``graph.json`` summary.

    Raises:
        FileNotFoundError: an input is missing.
        ValueError: the lexicon and units disagree, or no word of the LM is in the lexicon.
    """
    import kaldifst

    for p in (units_path, lexicon_path, arpa_path):
        if not Path(p).is_file():
            raise FileNotFoundError(f"graph: input not found: {p}")
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = load_units(units_path)
    lexicon, max_d = add_disambig(read_lexicon(lexicon_path, units))
    word_sep = WORD_SEP if WORD_SEP in units else None
    tokens = ["<eps>"] + units + [f"#{i}" for i in range(max_d + 1)]
    token_id = {t: i for i, t in enumerate(tokens)}
    first_disambig = token_id["#0"]
    lex_words = list(dict.fromkeys(w for w, *_ in lexicon))
    words = ["<eps>"] + lex_words + ([UNK] if UNK not in lex_words else []) + ["#0", "<s>", "</s>"]
    word_id = {w: i for i, w in enumerate(words)}
    write_text(out_dir / "tokens.txt", "".join(f"{t} {i}\n" for i, t in enumerate(tokens)))
    write_text(out_dir / "words.txt", "".join(f"{w} {i}\n" for i, w in enumerate(words)))
    write_text(out_dir / "lexicon.txt", "".join(f"{w} {' '.join(sp)}\n" for w, sp, _ in lexicon))

    lm_words = [w for w in _arpa_words(Path(arpa_path)) if w not in ("<s>", "</s>", UNK)]
    lex_set = set(lex_words)
    oov = [w for w in lm_words if w not in lex_set]
    if lm_words and len(oov) == len(lm_words):
        raise ValueError(f"graph: none of the {len(lm_words)} words of {arpa_path} is in {lexicon_path}")
    if oov:
        log.warning("graph: %d of %d LM words (%.1f%%) are not in the lexicon and are dropped from G: %s",
                    len(oov), len(lm_words), 100 * len(oov) / len(lm_words), ", ".join(oov[:10]))

    L = make_lexicon_fst(lexicon, token_id, word_id, first_disambig, word_sep)
    kaldifst.arcsort(L, sort_type="olabel")
    G = make_g(arpa_path, out_dir / "words.txt", max_order)
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.compose(L, G)
    kaldifst.determinize_star(LG, use_log=True)
    kaldifst.minimize_encoded(LG)
    LG = _relabel_inputs(LG, first_disambig)
    kaldifst.rmepsilon(LG)
    kaldifst.arcsort(LG, sort_type="ilabel")
    H = make_ctc_topo(len(units))
    kaldifst.arcsort(H, sort_type="olabel")
    HLG = kaldifst.compose(H, LG)
    kaldifst.arcsort(HLG, sort_type="ilabel")
    if HLG.num_states == 0:
        raise ValueError(f"graph: HLG is empty: no sentence of {arpa_path} can be spelled with {lexicon_path}")
    with atomic_path(out_dir / "HLG.fst") as tmp:
        HLG.write(str(tmp))
    info = {"units": len(units), "lexicon_entries": len(lexicon), "disambig": max_d + 1,
            "lm": str(arpa_path), "max_order": max_order, "lm_words": len(lm_words), "lm_oov": len(oov),
            "lm_oov_examples": oov[:20], "G_states": G.num_states,
            "LG_states": LG.num_states, "HLG_states": HLG.num_states,
            "HLG_arcs": sum(HLG.num_arcs(s) for s in range(HLG.num_states)),
            "seconds": round(time.time() - t0, 2)}
    write_json(out_dir / "graph.json", info)
    log.info("graph: HLG with %d states, %d arcs (%d units, %d words) in %.1fs", info["HLG_states"],
             info["HLG_arcs"], len(units), len(lex_words), info["seconds"])
    return info


def load_hlg(graph_dir: str | Path):
    """``(HLG, words)`` from a graph directory: the FST and its word list (index = word id).

    Loaded once per file version (decoders only read it), so re-tuning does not re-read it.
    """
    graph_dir = Path(graph_dir)
    for name in ("HLG.fst", "words.txt"):
        if not (graph_dir / name).is_file():
            raise FileNotFoundError(f"{graph_dir / name} is missing; run the graph stage (w2v graph)")
    return _load_hlg(str(graph_dir.resolve()), (graph_dir / "HLG.fst").stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_hlg(graph_dir: str, mtime_ns: int):
    import kaldifst

    graph_dir = Path(graph_dir)
    words = [line.split()[0] for line in (graph_dir / "words.txt").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    return kaldifst.StdVectorFst.read(str(graph_dir / "HLG.fst")), words
