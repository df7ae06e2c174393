#!/bin/bash
# The GPU checks of issues 12 and 13 in one go, most important first; every step leaves its
# results under $OUT as soon as it ends, so a run cut short still reports what it finished.
#   OUT=/tmp/out bash benchmarks/gpu_session.sh
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
pack() { tar czf "$OUT/$1.tgz" -C "$W" "${@:2}" 2>/dev/null; }
R="python3 -m dualscale reproduce"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step smoke 120 $R --steps 60 --n-samples 500 --store "$W/smoke" || { echo "smoke failed: stopping"; exit 1; }
step reproduction 150 $R --seeds 0 --store "$W/repro"
pack results repro/tables
step seeds10_linear 200 $R --seeds 0-9 --light --store "$W/study_linear"
pack study_linear study_linear
step seeds10_zero_snr_v 200 $R --seeds 0-9 --light --beta-schedule zero_snr --prediction v --store "$W/study_zero_snr"
pack study_zero_snr study_zero_snr
step seeds10_cosine 200 $R --seeds 0-9 --light --beta-schedule cosine --store "$W/study_cosine"
pack study_cosine study_cosine
step bench 120 python3 benchmarks/stack.py --steps 300 --repeats 3
step tf32 90 $R --seeds 0 --precision tf32 --store "$W/tf32" --out "$W/tables_tf32"
step bf16 90 $R --seeds 0 --precision bf16 --store "$W/bf16" --out "$W/tables_bf16"
pack results repro/tables tables_tf32 tables_bf16
step seeds10_linear_beta_end_0.1 200 $R --seeds 0-9 --light --beta-end 0.1 --store "$W/study_beta_end"
pack study_beta_end study_beta_end
step alone 150 $R --seeds 0 --no-stack --jobs 8 --store "$W/alone" --out "$W/tables_alone"
pack results repro/tables tables_tf32 tables_bf16 tables_alone
echo "== done $(date +%T)"
