#!/usr/bin/env bash
# The whole GPU check in one command, for a machine with a CUDA GPU and PyTorch, Triton, h5py,
# rich and typer installed (no install step: such machines often have no network). Run from
# anywhere; the log goes to $OUT/gpu_check.log when $OUT is set, else to ./gpu_check.log.
#
#     bash bench/gpu_check.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log="${OUT:-.}/gpu_check.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$log"
python3 setup.py -q build_ext --inplace >/dev/null 2>&1 || echo "note: C kernel not built (not needed on the GPU)" | tee -a "$log"
python3 bench/gpu_check.py "$@" 2>&1 | tee -a "$log"
