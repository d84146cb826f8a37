#!/usr/bin/env bash
# The GPU figures the issues ask for, with the CPU figures beside them, in one script sized for a
# 15-minute device lease (at most 12 minutes of work, sections capped). Run from the repository root:
#   bash benchmarks/gpu.sh            # writes benchmarks/gpu-<date>.log (or $OUT/gpu.log)
# On the lent device machine: benchmarks/device_wheels.sh first (its header says how).
# Issue 18 (GPU targets): every-step every-layer ("full") <= 1.05x, default <= 1.01x, fp32 and
# bf16 autocast side by side; zero host syncs on the step path under CUDA's sync debug mode.
# Each section runs on its own under a time limit, so one failure does not cost the others.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PY:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} WANDB_MODE=offline PYTHONUNBUFFERED=1
if [[ -n "${OUT:-}" ]]; then log=$OUT/gpu.log; else log=benchmarks/gpu-$(date +%Y%m%d-%H%M).log; fi

section() {  # section <seconds> <title> <command...>
  local limit=$1 title=$2
  shift 2
  echo "== $title"
  local t0=$SECONDS
  timeout -k 10 "$limit" "$@"
  local rc=$?
  echo "-- rc=$rc after $((SECONDS - t0)) s"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
  # Most important first: a section cut by its limit costs only what comes after it.
  section 90 "host syncs on the step path, CUDA sync debug mode (both scripts, the guard)" \
    $PY -m pytest -p no:cacheprovider -q tests/test_host_sync.py tests/test_step_guard.py
  section 150 "default, full and weights, step-paired against an identical copy, fp32" \
    $PY benchmarks/diagnostics_overhead.py --device cuda --modes default,full,weights --paired 1 --reps 0
  section 100 "default and full, step-paired, bf16 autocast" \
    $PY benchmarks/diagnostics_overhead.py --device cuda --amp bf16 --modes default,full --paired 1 --reps 0
  section 120 "all modes in blocks (naive; wandb row if installed), fp32, with ops per write" \
    $PY benchmarks/diagnostics_overhead.py --device cuda --reps 1
  # Makes the built-in data first (about 2.5 min on the device's CPU), untimed.
  section 240 "GAN steps/s on the GPU, fp32 / bf16 autocast (CPU figures: DEVLOG, this machine's)" \
    $PY benchmarks/train_speed.py --device cuda --steps 30 --reps 1
} 2>&1 | tee "$log"
echo "wrote $log"
