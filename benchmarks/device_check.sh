#!/usr/bin/env bash
# Issue 15's checks for a session lent a GPU, as one prepared run: a device session has ~15 minutes in all
# (the machine's start included) and at most 10 minutes a command, so the steps run most important first, each
# under its own time limit, and a step is skipped when too little of the budget is left for it. Every step's
# output lands in $OUT as it runs (a step cut short still comes back), with one line per step in summary.txt.
#
# On the device (after ../shared/device/prepare-wheels.sh and
#     cp ../shared/data/dev_universe/us_large_caps_1990_2019.csv data/dev_universe.csv
# here; carry [".whl", "data/dev_universe.csv"], timeout_s 600):
#     bash benchmarks/device_check.sh            # budget 570 s
#     bash benchmarks/device_check.sh 400        # a shorter budget (a rerun on a warm machine)
# Here, to check the script itself on a CPU in ~2-5 minutes (CUDA tests skip; toy sizes, but fit-once runs the whole
# development universe for one epoch, 40 s):
#     bash benchmarks/device_check.sh --dry
#
# Steps (the 2026-11-28 H200 run took 30 + 27 + 130 s for the first three; without the development universe
# the two steps that read it are skipped):
#   cuda_tests  the CUDA-only tests (-m cuda): every device path that landed since the last GPU run
#   train       benchmarks/train.py on the bundled sample: nightcast's loop vs the conventional one, the default
#               training as a graph vs eager vs the machine's 16 CPU cores, the bf16 share
#   refits      benchmarks/backtest.py refits, 500 x 25, one epoch: 12 cold refits one after another vs together
#   fit_once    benchmarks/backtest.py fit-once: the development universe's walk-forward, GPU vs 16 CPU threads
#   ensemble    benchmarks/backtest.py ensemble: 7 fits of the development universe, one after another vs together
#   compiled    benchmarks/_stacked_probe.py: K fits stacked through torch.compile vs one cuDNN fit (measured
#               2026-11-28: the streams' ceiling; last, for a rerun after a change to the model)
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0 budget=570
case "${1:-}" in
  --dry) dry=1 budget=900 ;;
  "") ;;
  *) budget=$1 ;;
esac
out=${OUT:-/tmp/device_check}
mkdir -p "$out"
start=$SECONDS

if ((dry)); then
  py=${PYTHON:-.venv/bin/python}
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheels did not install: run ../shared/device/prepare-wheels.sh here and carry [\".whl\"]"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  py=python3
fi
export PYTHONUNBUFFERED=1

{
  date -u
  git log -1 --format='%h %s' 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $py -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
  nproc
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

# step NAME LIMIT_S NEEDS_S COMMAND...: run COMMAND for at most LIMIT_S (never past the budget), skipped when
# fewer than NEEDS_S seconds of the budget are left; its output to NAME.txt, one line to summary.txt.
step() {
  local name=$1 limit=$2 needs=$3
  shift 3
  local left=$((budget - (SECONDS - start)))
  if ((left < needs)); then
    echo "$name: skipped (${left} s of the budget left, needs ${needs})" | tee -a "$out/summary.txt"
    return
  fi
  ((limit > left)) && limit=$left
  local t0=$SECONDS
  timeout --signal=INT --kill-after=10 "$limit" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  local result
  result=$(grep -h '^RESULT\|passed\|failed\|skipped' "$out/$name.txt" | tail -n 3 | tr '\n' ' ')
  echo "$name: rc=$rc $((SECONDS - t0)) s (limit ${limit}) ${result}" | tee -a "$out/summary.txt"
}

dev=data/dev_universe.csv
if ((dry)); then
  step cuda_tests 120 10 $py -m pytest -q -p no:cacheprovider -m cuda tests/forecasting
  step train 480 20 $py benchmarks/train.py --device cpu --epochs 1
  step refits 150 30 $py benchmarks/backtest.py refits --device cpu --tickers 6 --years 4 --refits 2 --epochs 1
  if [[ -f $dev ]]; then
    step fit_once 200 30 $py benchmarks/backtest.py fit-once --dev-csv $dev --epochs 1 --cpu-threads 2
  else
    echo "fit_once: skipped ($dev not there)" | tee -a "$out/summary.txt"
  fi
  step compiled 240 30 $py benchmarks/_stacked_probe.py --check --ways compiled
else
  step cuda_tests 120 60 $py -m pytest -q -p no:cacheprovider -m cuda -s tests/forecasting
  step train 120 60 $py benchmarks/train.py --device cuda --threads 16
  step refits 200 160 $py benchmarks/backtest.py refits --device cuda --epochs 1 --ways "sequential cold,together cold"
  if [[ -f $dev ]]; then
    step fit_once 120 70 $py benchmarks/backtest.py fit-once --dev-csv $dev --cpu-threads 16
    step ensemble 90 40 $py benchmarks/backtest.py ensemble --dev-csv $dev
  else
    echo "fit_once, ensemble: skipped ($dev not carried)" | tee -a "$out/summary.txt"
  fi
  step compiled 200 90 $py benchmarks/_stacked_probe.py --ways cudnn,compiled --fits 1 --compile-fits 12,24
fi
echo "total $((SECONDS - start)) s of ${budget}" | tee -a "$out/summary.txt"
