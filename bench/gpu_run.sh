#!/bin/bash
# The GPU checks in one run (device machine: one H100/H200, Python 3.12, jax with CUDA, no
# package index). Carry .wheels (../shared/tools/device-wheels.sh) and an EG3D checkout in
# .eg3d/eg3d. Writes logs and JSON to $OUT. Two device calls of under 10 minutes each on an
# H100 (SECTIONS below); each section has its own timeout, in order of what matters most,
# so a slow one costs only itself.
#
#   bash bench/gpu_run.sh                    # on the GPU machine, every section
#   SECTIONS="1 2 3" bash bench/gpu_run.sh   # some of them (a device call lasts <= 10 min:
#   SECTIONS="4 5" bash bench/gpu_run.sh     #   run the two halves as two calls)
#   DRY=1 bash bench/gpu_run.sh              # dry run on a CPU: every command, CPU-sized
#
# Sections: 1 parity tests; 2 train step of configs/avatar256.py (float32 and bfloat16,
# batch 4/8/32, peak device memory, EG3D's float32 step at batch 4/8 beside it); 3 512²
# sampling throughput in bfloat16 at batch 32/64/128 with XLA's FLOP count and the fraction
# of the chip's dense bf16 peak; 4 train step of configs/avatar512.py (bfloat16, batch 4/8,
# and 32 as 4 accumulated micro-batches); 5 bf16 training of avatar256 on mannequin data
# for a few hundred steps, checked for NaN/Inf (the loop stops with an error on either).
set -u
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
DRY=${DRY:-0}
SECTIONS=${SECTIONS:-1 2 3 4 5}
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; esac; return 1; }
SCALE=1; [ "$DRY" = 1 ] && SCALE=4  # a loaded CPU compiles slower than the GPU host
t() { local s=$1; shift; timeout $((s * SCALE)) "$@"; }
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ "$DRY" = 1 ]; then
    # CPU-sized stand-ins for every command (same scripts and flags, small shapes).
    # XLA:CPU emulates bfloat16 convolutions (minutes a step): the dry run's bf16 rows run
    # in float32 through the same flags.
    A256=tiny; A512=demo; S512=tiny; TB="2"; TB32="4"; SB="2,4"; ITERS=1; BF16=float32
    DTYPES=float32
    DATA_RES=64; DATA_IDS=4; TRAIN_CFG=configs/tiny.py; TRAIN_KIMG=0.02; PY=${PY:-python3}
else
    A256=avatar256; A512=avatar512; S512=ffhq512; TB="4,8"; TB32="32"; SB="32,64,128"; ITERS=5
    DATA_RES=256; DATA_IDS=48; TRAIN_CFG=configs/avatar256.py; TRAIN_KIMG=4.8; PY=python3
    BF16=bfloat16; DTYPES="bfloat16 float32"
    $PY -m pip install -q --no-index --no-deps .wheels/*.whl 2>&1 | tail -1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
$PY -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
$PY -c "import torch; print('torch', torch.__version__)" 2>&1 | tail -1
EG3D=.eg3d/eg3d; [ -d "$EG3D" ] || EG3D=${EG3D_SRC:-}
TORCH_DEVICE=cuda; [ "$DRY" = 1 ] && TORCH_DEVICE=cpu
eg3d_flag() { [ -n "$EG3D" ] && [ -d "$EG3D" ] && echo "--eg3d-src $EG3D --torch-device $TORCH_DEVICE"; }

if want 1; then
    echo "== 1. parity tests (float32, matmul precision highest)"
    t 150 $PY -m pytest -q -x -p no:cacheprovider tests/test_eg3d_parity.py \
        tests/test_sr_parity.py 2>&1 | tail -4
fi

if want 2; then
    echo "== 2. train step, $A256: JAX float32 and bfloat16 (one process per row: own peak memory)"
    for dtype in $DTYPES; do
        for b in ${TB//,/ }; do
            # EG3D's float32 step beside ours at the same batch (float32 rows only).
            extra=""; [ "$dtype" = float32 ] && extra=$(eg3d_flag)
            t 150 $PY bench/train_step.py --configs $A256 --batch "$b" --iters $ITERS \
                --dtype $dtype $extra --json "$OUT/train_${A256}_${dtype}_b$b.json" 2>&1 \
                | grep "^|" | tail -1
        done
    done
    t 120 $PY bench/train_step.py --configs $A256 --batch "$TB32" --iters $ITERS \
        --dtype $BF16 --json "$OUT/train_${A256}_${BF16}_b$TB32.json" 2>&1 | grep "^|" | tail -1
fi

if want 3; then
    echo "== 3. 512² sampling, bfloat16: images/s, XLA FLOPs, fraction of the dense bf16 peak"
    t 150 $PY bench/generator.py --configs $S512 --batch "$SB" --iters $ITERS \
        --dtype $BF16 --json "$OUT/sample_${S512}_$BF16.json" 2>&1 | grep -v Warn | tail -5
fi

if want 4; then
    echo "== 4. train step, $A512: bfloat16, batch ${TB}, and $TB32 as 4 micro-batches"
    for b in ${TB//,/ }; do
        t 120 $PY bench/train_step.py --configs $A512 --batch "$b" --iters $ITERS \
            --dtype $BF16 --json "$OUT/train_${A512}_${BF16}_b$b.json" 2>&1 | grep "^|" | tail -1
    done
    t 150 $PY bench/train_step.py --configs $A512 --batch "$TB32" --accum 4 --iters $ITERS \
        --dtype $BF16 --json "$OUT/train_${A512}_${BF16}_b${TB32}_accum4.json" 2>&1 \
        | grep "^|" | tail -1
fi

if want 5; then
    echo "== 5. bf16 training of $TRAIN_CFG on mannequin data: no NaN/Inf"
    DATA=$OUT/mannequin$DATA_RES; RUN=$OUT/run_bf16
    t 90 $PY -m styleavatar_jax.cli make-dataset mannequin --out "$DATA" --res $DATA_RES \
        --num-ids $DATA_IDS --views-per-id 8 --guidance none --no-progress 2>&1 | tail -1
    t 200 $PY -m styleavatar_jax.cli train --config $TRAIN_CFG --workdir "$RUN" \
        --config.data.path="$DATA" --config.train.total_kimg=$TRAIN_KIMG --no-progress \
        --max-minutes 3 > "$OUT/train_bf16.log" 2>&1
    echo "train exit status $? (non-zero: see $OUT/train_bf16.log; a NaN/Inf stops it with an error)"
    grep -E "^step|NaN|Inf|Error" "$OUT/train_bf16.log" | tail -4
    rm -rf "$DATA" "$RUN/checkpoints"
fi

echo "== done"
