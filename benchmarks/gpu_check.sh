#!/usr/bin/env bash
# One prepared GPU check (run through the device tool): the GPU benchmarks, each bounded in
# time, with results written under $OUT. Usage on the device machine, from the repo root:
#   bash benchmarks/gpu_check.sh            # OUT defaults to ./gpu_out
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); sys.exit(0 if torch.cuda.is_available() else 1)" \
  | tee "$OUT/env.txt" || { echo "no CUDA device"; exit 1; }
python3 -c "import einops" 2>/dev/null || echo "einops missing: carry it as a wheel (.whl)" | tee -a "$OUT/env.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$OUT/env.txt" 2>&1

status=0
timeout 240 python3 benchmarks/bench_logdet.py --device cuda --repeats 30 \
  --json "$OUT/logdet_gpu.json" --markdown "$OUT/logdet_gpu.md" --rst "$OUT/logdet_gpu.rst" \
  2>&1 | tee "$OUT/logdet_gpu.log" || status=1
exit $status
