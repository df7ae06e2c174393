#!/bin/bash
# Issue 24's confirmatory family on one GPU: fresh dino seeds (68 and up) of all three variants,
# stacked, fp32, reference settings, light copies; the new runs come back as one tar under $OUT.
#   OUT=/tmp/out bash benchmarks/gpu_confirm.sh [SECONDS]
# Rounds of 45 seeds (135 runs in one stack): a round is stored whole or not at all, so a run cut
# short by SECONDS still returns every finished round. Beside it, the CUDA tests of the stacked and
# single paths (their log comes back too). Ship the runs: docs/store.md ("evidence").
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TQDM_DISABLE=1
limit=${1:-450}
mkdir -p "$OUT"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
( timeout 150 python3 -m pytest -x -q -rs tests/lib/test_stack.py tests/lib/test_runs.py -k cuda \
    > "$OUT/cuda_tests.log" 2>&1; echo "cuda tests: exit $?" >> "$OUT/cuda_tests.log" ) &
t0=$(date +%s)
timeout "$limit" python3 -m dualscale settle --family confirmatory --light --stack --batch 45 --jobs 12 \
  2>&1 | tee "$OUT/settle.log"
echo "settle: wall $(( $(date +%s) - t0 )) s" | tee -a "$OUT/settle.log"
wait
runs=$(cd checkpoints && ls -d dino-*-s* 2>/dev/null)
echo "$(echo "$runs" | grep -c . ) new runs"
[ -n "$runs" ] && tar czf "$OUT/confirm_runs.tgz" -C checkpoints $runs
tail -5 "$OUT/cuda_tests.log"
