#!/usr/bin/env bash
# mammo's GPU paths on a GPU machine, in one command, everything measured in one text file:
#
#   bash scripts/gpu_check.sh                 # report: $OUT/gpu_check.txt (OUT defaults to outputs/gpu_check)
#   GPU_CHECK_REHEARSE=1 bash scripts/gpu_check.sh   # the same steps on the CPU, tiny: checks this script
#
# Steps (each with its own time limit; a failing step is reported and the next one runs):
#   1. the machine: nvidia-smi, Python, torch and CUDA versions, the GPU torch sees;
#   2. Python packages: .venv if `make` built one; else the machine's python3 with mammo's
#      packages from the wheels in .whl/ (scripts/gpu_wheels.sh fetches them, for a GPU machine
#      that reaches no registry) or from requirements/lock.txt (pip, where a registry is reached);
#   3. the tests marked `gpu` (pytest -m gpu: bf16 + channels_last training, batch augmentation on
#      the device, evaluate on the GPU against the CPU, DDP on one GPU);
#   4. a short demo run with trainer=gpu and img_size=[1024,512], then mammo.evaluate,
#      mammo.predict and mammo.embed with device=auto and Grad-CAM, each checked for `cuda` in
#      what it records (summary.json's environment, run.log's "Inference on cuda" lines);
#   5. DDP on the one GPU lent (trainer=ddp trainer.devices=1): one run directory, world size 1;
#   6. scripts/bench_train.py at 512 and 1024x512 (bf16-mixed, channels_last; mammo's fit vs a
#      plain loop, absolute images/s) and scripts/bench_embed.py (mammo.embed's loop vs a bare one).
# Without a GPU it says so in one line, runs the `gpu` tests (which then skip, saying so) and
# exits 0. Planned to take under 8 minutes on one H200; the report says how long each step took.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.txt"
: >"$REPORT"
WORK=$(mktemp -d /tmp/mammo-gpu-check.XXXXXX)
START=$SECONDS
FAILED=()
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1

say() { echo "$*" | tee -a "$REPORT"; }

step() {  # step NAME LIMIT_S COMMAND...: run, append its output to the report, note rc and time
  local name=$1 limit=$2
  shift 2
  say ""
  say "== $name =="
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$REPORT"
  local rc=${PIPESTATUS[0]}
  say "-- $name: rc=$rc in $((SECONDS - t0)) s (limit ${limit} s; $((SECONDS - START)) s so far)"
  [ "$rc" = 0 ] || FAILED+=("$name")
  return "$rc"
}

python_for_mammo() {  # sets PY: a Python that imports mammo and its packages
  if [ -x .venv/bin/python ]; then  # what `make` built
    PY=$PWD/.venv/bin/python
  elif compgen -G ".whl/*.whl" >/dev/null; then  # an offline GPU image: the wheels carried along
    PY=$(command -v python3)
    local site="$WORK/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl || return 1
    export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"  # mammo from this checkout
  else  # a machine that reaches a registry: the lock file, as make builds it for CI
    make .venv/.installed || return 1
    PY=$PWD/.venv/bin/python
  fi
}

if [ "${GPU_CHECK_REHEARSE:-0}" = 1 ]; then  # the GPU steps' mechanics on the CPU, tiny
  DEVICE=cpu TRAINER=cpu MODEL=tiny SIZE='[64,32]' BENCH_SIZES="64 64x32" STEPS=2 EMBED=(--images 16 --repeats 1 --patients 8)
  DEMO=(data.demo.n_patients=24 data.demo.height=160 data.demo.width=128)
else
  DEVICE=cuda TRAINER=gpu MODEL=efficientnetb0 SIZE='[1024,512]' BENCH_SIZES="512 1024x512" STEPS=30 EMBED=()
  DEMO=(data.demo.n_patients=24)
fi

say "mammo GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
step "machine" 60 bash -c 'nvidia-smi || echo "nvidia-smi: not found"; uname -srm; nproc; free -g | head -2'
say ""
say "== python packages =="
python_for_mammo >"$WORK/packages.log" 2>&1
rc=$?
grep -v "^WARNING: Location" "$WORK/packages.log" | tail -20 | tee -a "$REPORT"
[ "$rc" = 0 ] || { say "no Python with mammo's packages (rc=$rc): stopping"; exit 1; }
say "-- python packages: $PY${PYTHONPATH:+ with PYTHONPATH=$PYTHONPATH} ($((SECONDS - START)) s so far)"
step "torch" 60 "$PY" -c 'import sys, torch, lightning, timm
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| lightning", lightning.__version__, "| timm", timm.__version__)
print("GPU:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none visible",
      "| bf16:", torch.cuda.is_available() and torch.cuda.is_bf16_supported())'

if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  say "no CUDA GPU visible (torch.cuda.is_available() is False): the GPU steps are skipped; on a GPU machine they run"
  step "gpu tests (skipped without a GPU)" 120 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs tests
  exit 0
fi

step "gpu tests" 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs tests

# a short demo run on the GPU at [1024,512], then what reads its checkpoint
OUTS="paths.output_dir=$WORK/outputs paths.demo_dir=$WORK/demo"
step "train trainer=$TRAINER img_size=$SIZE" 240 "$PY" -m mammo.train "trainer=$TRAINER" "model=$MODEL" \
  "img_size=$SIZE" epochs=2 batch_size=8 deterministic=false "${DEMO[@]}" $OUTS
RUN=$(ls -d "$WORK"/outputs/mammo_*_density/results_* 2>/dev/null | head -1)
step "train recorded the device" 30 "$PY" - "$RUN" "$DEVICE" <<'EOF'
import json, sys
summary = json.load(open(f"{sys.argv[1]}/summary.json"))
env = summary["environment"]
print({k: env.get(k) for k in ("gpu", "accelerator", "precision", "strategy", "world_size")}, summary["status"])
expected = "CUDAAccelerator" if sys.argv[2] == "cuda" else "CPUAccelerator"
sys.exit(0 if summary["status"] == "completed" and env.get("accelerator") == expected else 1)
EOF
CKPT="$RUN/best_model.pt"
step "evaluate device=auto (Grad-CAM too)" 180 "$PY" -m mammo.evaluate "ckpt=$CKPT" split=val "${DEMO[@]}" $OUTS
step "predict device=auto" 120 "$PY" -m mammo.predict "ckpt=$CKPT" "input=$WORK/demo" $OUTS
step "embed device=auto" 180 "$PY" -m mammo.embed "${DEMO[@]}" batch_size=32 "embed.projections=[pca]" $OUTS
step "each recorded $DEVICE" 30 bash -c "
  grep -h 'Inference on $DEVICE' $WORK/outputs/evaluations/results_*/run.log &&
  grep -h 'on $DEVICE\$' $WORK/outputs/predictions/results_*/run.log &&
  grep -h 'Embedding on $DEVICE' $WORK/outputs/embeddings_*/run.log &&
  ls $WORK/outputs/evaluations/results_*/plots/gradcam_samples.png"
step "DDP on one device (trainer=ddp trainer.devices=1)" 240 "$PY" -m mammo.train \
  "trainer=$([ "$DEVICE" = cuda ] && echo ddp || echo ddp_cpu)" trainer.devices=1 "model=$MODEL" \
  epochs=1 "${DEMO[@]}" $OUTS
step "bench_train ($BENCH_SIZES)" 300 "$PY" scripts/bench_train.py --sizes $BENCH_SIZES --steps "$STEPS" \
  --model "$MODEL"
step "bench_embed" 240 "$PY" scripts/bench_embed.py "${EMBED[@]}"

say ""
say "== done in $((SECONDS - START)) s; failed steps: ${FAILED[*]:-none} =="
rm -rf "$WORK"
[ ${#FAILED[@]} = 0 ]
