#!/usr/bin/env bash
# The GPU checks of the engine, as one script: correctness smoke, launch-bound profile,
# speed benchmark, and a timed full `reproduce` (12 runs x 10,000 steps) on the GPU.
# Usage: OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
# The CUDA-graph step against the eager one first (nothing below is worth running if it fails),
# then the math tests (the hand-written step's gradients on CUDA too) and CUDA seeded determinism.
python3 -m pytest -x -q tests/lib/test_runs.py -k "graph" 2>&1 | tee "$OUT/pytest.txt" | tail -15
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
python3 -m pytest -q -rs tests/lib/test_math.py tests/lib/test_runs.py -k "not cli" 2>&1 | tee -a "$OUT/pytest.txt" | tail -4
python3 benchmarks/launch_bound.py --steps 300 2>&1 | tee "$OUT/launch_bound.txt"
python3 benchmarks/speed.py --device cuda --quick 2>&1 | tee "$OUT/speed.txt"
start=$(date +%s.%N)
timeout "${REPRODUCE_LIMIT:-330}" python3 -m dualscale reproduce --device cuda --store /tmp/gpu_store \
  --out /tmp/gpu_tables ${REPRODUCE_ARGS:-} 2>"$OUT/reproduce_bars.txt" | tee "$OUT/reproduce.txt"
echo "reproduce exit $? wall $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s" | tee -a "$OUT/reproduce.txt"
cp /tmp/gpu_tables/tables.md /tmp/gpu_tables/runs.csv "$OUT/" 2>/dev/null  # $OUT returns at most 8 files
