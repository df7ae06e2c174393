#!/bin/bash
# Issue 12's GPU checks in one go, most important first; every step leaves its results under
# $OUT as soon as it ends, so a run cut short still reports what it finished (~5 min on an H100).
#   OUT=/tmp/out bash benchmarks/gpu_session.sh
# 1. the stacked step with every run's draws captured in the graph gives the eager stack's numbers
#    (and the single-run graph its eager numbers); nothing below is worth timing if that fails;
# 2. the 12-run reproduction and the 10-seed light sweep, stacked: wall from the command to the
#    tables, and the line each prints of where the time went (training, evaluation, scoring, saving);
# 3. the stacked step against the bare matmuls of its shapes;
# 4. the 12 runs trained alone on the same card (fidelity: stacked against alone, run by run).
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD TQDM_DISABLE=1
W=/tmp/gpu_work; mkdir -p "$W" "$OUT"
step() {  # step NAME SECONDS COMMAND...: run with a limit, print its wall time and exit code
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s%N)
  echo "== $(date +%T) $name: $*"
  timeout "$limit" "$@"
  local rc=$?
  echo "== $name: wall $(( ($(date +%s%N) - t0) / 1000000 )) ms, exit $rc"
  return $rc
}
R="python3 -m dualscale reproduce"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step tests 150 python3 -m pytest -x -q -rs tests/lib/test_stack.py tests/lib/test_runs.py -k cuda \
  || { echo "the captured draws or steps differ: stopping"; exit 1; }
step reproduction 120 $R --seeds 0 --store "$W/repro"
cp "$W/repro/tables/runs.csv" "$OUT/runs_stacked.csv"
step seeds10 200 $R --seeds 0-9 --light --store "$W/seeds10"
cp "$W/seeds10/tables/runs.csv" "$OUT/runs_seeds10.csv"
step bench 150 python3 benchmarks/stack.py --steps 600 --repeats 3
step alone 150 $R --seeds 0 --no-stack --jobs 8 --store "$W/alone" --out "$W/tables_alone"
cp "$W/tables_alone/runs.csv" "$OUT/runs_alone.csv"
python3 - "$OUT" <<'PY'
import sys, pandas as pd
out = sys.argv[1]
a, b = pd.read_csv(f"{out}/runs_stacked.csv"), pd.read_csv(f"{out}/runs_alone.csv")
m = a.merge(b, on=["dataset", "variant", "seed"], suffixes=("_stacked", "_alone"))
for k in ("eval_loss", "kl_divergence"):
    d = (m[f"{k}_stacked"] - m[f"{k}_alone"]).abs()
    print(f"stacked vs alone, {len(m)} runs: |{k} diff| max {d.max():.5f}, mean {d.mean():.5f}")
PY
echo "== done $(date +%T)"
