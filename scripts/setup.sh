#!/usr/bin/env bash
# Set up w2v on a fresh Debian/Ubuntu machine, idempotently:
#   1. Debian packages the recipes need (espeak-ng and the Bible texts for the demo corpus,
#      ffmpeg for SPHERE/shorten audio (WSJ, BABEL), Boost/zlib/bz2/lzma to build KenLM, cmake;
#      headless Chromium for the report-page test);
#   2. a virtual environment in .venv/ with torch (CPU wheel 2.13.0 unless W2V_TORCH says
#      otherwise) and the w2v package with its test extras, installed editable;
#   3. KenLM's lmplz and build_binary (not in the kenlm pip wheel), built from the kenlm
#      source distribution into .venv/bin.
# Each step is skipped when already done, so running it again costs a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=${PYTHON:-python3}
TORCH_SPEC=${W2V_TORCH:-torch==2.13.0}
log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- 1. Debian packages
DEBS=(espeak-ng bible-kjv sword-text-web sword-text-sparv diatheke ffmpeg cmake g++ make
      libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev
      zlib1g-dev libbz2-dev liblzma-dev
      chromium-headless-shell)  # the test that renders the report page (tests/browser.py)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  command -v apt-get >/dev/null || die "apt-get not found; install these packages by hand: ${missing[*]}"
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/tmp/w2v-apt.log 2>&1; then
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/tmp/w2v-apt.log 2>&1 \
      || die "apt-get could not install ${missing[*]} (log: /tmp/w2v-apt.log). Install them by hand, then rerun."
  fi
fi

# ---- 2. Python environment
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; $PY -m venv "$VENV"; }
stamp=$VENV/.w2v-installed
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages into .venv (torch: $TORCH_SPEC)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$TORCH_SPEC" 2>&1 | grep -v '^WARNING: Location' || true
  # torch first, then the package: a range in pyproject that the installed torch satisfies
  # installs nothing more (no multi-GB CUDA wheel on a CPU machine).
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c "import torch, lhotse, kenlm, snakemake, flashlight.lib.text.decoder.kenlm, kaldifst, kaldilm, kaldi_decoder, w2v" \
    || die "Python packages did not install; see the pip output above"
  echo "$want" > "$stamp"
fi

# ---- 3. KenLM binaries
KENLM_VERSION=0.3.0
KENLM_URL=https://files.pythonhosted.org/packages/02/6e/f4e159cef39ea4ef2244b4aa32857d447d60a5d0ee269e1b1f8d3723c03e/kenlm-0.3.0.tar.gz
KENLM_SHA=c4628bb9fb63c8a6f9240035b8b037385cfc404cb72e933cf48878291edac1e8
if [ ! -x "$VENV/bin/lmplz" ] || [ ! -x "$VENV/bin/build_binary" ]; then
  log "building KenLM $KENLM_VERSION lmplz/build_binary (about a minute)"
  src=$ROOT/third_party/kenlm
  mkdir -p "$src"
  if [ ! -f "$src/kenlm.tar.gz" ]; then
    curl -fsSL -o "$src/kenlm.tar.gz.part" "$KENLM_URL" || die "could not download $KENLM_URL"
    mv "$src/kenlm.tar.gz.part" "$src/kenlm.tar.gz"
  fi
  echo "$KENLM_SHA  $src/kenlm.tar.gz" | sha256sum -c --quiet || { rm -f "$src/kenlm.tar.gz"; die "kenlm source checksum mismatch"; }
  rm -rf "$src/kenlm-$KENLM_VERSION" && tar xzf "$src/kenlm.tar.gz" -C "$src"
  cmake -S "$src/kenlm-$KENLM_VERSION" -B "$src/build" -DCMAKE_BUILD_TYPE=Release >"$src/cmake.log" 2>&1 \
    || die "cmake failed for KenLM (log: $src/cmake.log)"
  make -C "$src/build" -j"$(nproc)" lmplz build_binary >"$src/make.log" 2>&1 \
    || die "building KenLM failed (log: $src/make.log)"
  install -m 755 "$src/build/bin/lmplz" "$src/build/bin/build_binary" "$VENV/bin/"
fi
log "ready: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
