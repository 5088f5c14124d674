#!/usr/bin/env bash
# GPU check, at most 8 minutes on one NVIDIA GPU: installs what it can, then runs benchmarks/gpu_check.py
# (a random-weight Llama of 7B shape in bfloat16: batched vs one-at-a-time greedy output on the hf
# backend, and hf vs vLLM timing on the sample suite's probes).
#
#   bash benchmarks/gpu_check.sh [--layers N] [--new-tokens N] [--out FILE]
#
# Run from the repository root in an environment with a CUDA build of torch. Without network access the
# vLLM install is skipped and the check reports the hf backend alone.
set -uo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PY=${PYTHON:-python3}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { echo "no CUDA GPU visible to torch"; exit 1; }
# transformers and PyYAML are this project's own needs; vLLM is optional (it brings its own torch pin).
"$PY" -c "import transformers, yaml, tabulate" 2>/dev/null || timeout 180 "$PY" -m pip install -q --retries 0 --timeout 15 transformers pyyaml tabulate
if ! "$PY" -c "import vllm" 2>/dev/null; then
  timeout 240 "$PY" -m pip install -q --retries 0 --timeout 15 vllm >/tmp/gpu-check-vllm.log 2>&1 || echo "vllm could not be installed here (see /tmp/gpu-check-vllm.log): hf only"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 420 "$PY" benchmarks/gpu_check.py "$@"
