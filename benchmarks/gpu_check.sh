#!/usr/bin/env bash
# The one prepared GPU check (run through the device tool, from the repo root): the GPU
# benchmarks and a short training run, each bounded in time; the Markdown tables and one
# gpu_results.tar.gz with every log and JSON land in $OUT (the device tool returns 8 files). Budget: about 9 minutes in all.
#   bash benchmarks/gpu_check.sh            # OUT defaults to ./gpu_out
set -uo pipefail
FINAL=${OUT:-gpu_out}
mkdir -p "$FINAL"
OUT=$(mktemp -d)  # everything is packed into $FINAL/gpu_results.tar.gz at the end (8-file limit)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import einops" 2>&1 || echo "einops missing: carry it as a wheel (.whl)"
} > "$OUT/env.txt" 2>&1
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { cat "$OUT/env.txt"; echo "no CUDA device"; exit 1; }

status=0
run() {  # run NAME SECONDS CMD...: log to $OUT/NAME.log, never longer than SECONDS
  local name=$1 secs=$2; shift 2
  echo "== $name (<= ${secs}s) =="
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1 || { echo "$name failed or timed out"; status=1; }
  tail -n 25 "$OUT/$name.log"
}
run logdet 150 python3 benchmarks/bench_logdet.py --device cuda --repeats 30 \
  --json "$OUT/logdet_gpu.json" --markdown "$OUT/logdet_gpu.md"
run attention 150 python3 benchmarks/bench_attention.py --device cuda \
  --json "$OUT/attention_gpu.json" --markdown "$OUT/attention_gpu.md"
run regularizers 90 python3 benchmarks/bench_regularizers.py --device cuda --repeats 10 \
  --json "$OUT/regularizers_gpu.json" --markdown "$OUT/regularizers_gpu.md"
[ -f benchmarks/bench_data.py ] && run data 60 python3 benchmarks/bench_data.py --device cuda \
  --seconds 5 --repeats 2 --skip-baseline --out "$OUT/data_gpu"
[ -f benchmarks/bench_train_step.py ] && run train_step 90 python3 benchmarks/bench_train_step.py \
  --device cuda --json "$OUT/train_step_gpu.json"
[ -f examples/step2_teacherless.py ] && run step2 60 python3 examples/step2_teacherless.py \
  --smoke --out "$OUT/step2"
cp "$OUT"/*.md "$FINAL"/ 2>/dev/null
tar -czf "$FINAL/gpu_results.tar.gz" -C "$OUT" .
exit $status
