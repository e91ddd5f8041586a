#!/usr/bin/env bash
# The GPU checks pending a device machine, in one run of about 5 minutes (docs/performance.md, "Large
# depthwise convs on a GPU"): tests/test_gpu.py (the Triton kernels and the FFT against cuDNN, the
# trainer's GPU path), then bench/depthwise_conv.py on CUDA: native cuDNN, FFT and Triton fwd + bwd
# at kernels 3..31 with the compute floor, RepLKNet-31B's stage shapes with a Triton launch sweep,
# bf16 and NCHW. Results land in $OUT (the device tool brings them back), one file per step.
#
# From the lead's session (its checkout is what travels; .whl holds pydantic and timm for the
# trainer tests, see docs/performance.md): the device tool's run with
#   command: bash bench/gpu_check.sh    carry: [".whl"]    timeout_s: 540
# `bash bench/gpu_check.sh auto` runs only the last group (auto's crossover, a whole RepLKNet-31B step: ~7 min).
# Each step has its own time limit, so a slow step costs its slot, not the rest.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
BENCH="$PY bench/depthwise_conv.py --device cuda"

step() {  # step NAME SECONDS COMMAND...: output to $OUT/NAME, status line to the log
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - start)) s (limit $limit s)" | tee -a "$OUT/steps.txt"
    tail -n 3 "$OUT/$name"
}

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    $PY -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
    git log -1 --format='%H %s' 2>/dev/null
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "${1:-all}" = all ]; then
# correctness first: Triton and the FFT against cuDNN, the trainer on the GPU (-s: the FFT test prints its speed)
step gpu_tests.txt 150 $PY -m pytest tests/test_gpu.py -q -s -p no:cacheprovider --noconftest -p gpu_pytest_plugin
# the issue's setting (batch 32, 64 ch, 56x56, fp32, channels_last): kernels 3..31, ratios and floor
step bench_fp32.md 110 $BENCH --max-rel-diff 1e-4
# RepLKNet-31B's four stages, and the Triton launch (TILE x num_warps) at each
step bench_stages.md 120 $BENCH --stages --triton-configs 1024x4,2048x8,4096x8 --max-rel-diff 1e-4
# the trainer's bf16 autocast, and NCHW (the layout the Triton tiles are written for)
step bench_bf16.md 60 $BENCH --dtype bfloat16 --kernels 7,13,31 --max-rel-diff 3e-2
step bench_nchw.md 60 $BENCH --nchw --kernels 7,13,31 --max-rel-diff 1e-4
fi
if [ "${1:-all}" = all ] || [ "$1" = auto ]; then
# `auto`'s CUDA crossover (FFT_MIN_KERNEL['cuda']) under the trainer's settings: the FFT tests, cuDNN
# allowed to time its algorithms (cudnn.benchmark, as the trainer sets), and a whole RepLKNet-31B step
step auto_tests.txt 90 $PY -m pytest tests/test_gpu.py -q -s -p no:cacheprovider --noconftest -p gpu_pytest_plugin -k "fft or auto"
step bench_fp32_cudnnbench.md 60 $BENCH --cudnn-benchmark --impls native,fft --kernels 7,9,13,31 --max-rel-diff 1e-4
step bench_bf16_cudnnbench.md 50 $BENCH --cudnn-benchmark --impls native,fft --dtype bfloat16 --kernels 7,9,13,31 --max-rel-diff 3e-2
step replknet_bf16.md 110 $PY bench/replknet_step.py --device cuda --impls native,auto,triton
step replknet_fp32.md 80 $PY bench/replknet_step.py --device cuda --amp none --impls native,auto --repeats 2
fi
