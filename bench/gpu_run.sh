#!/bin/bash
# The GPU checks in one run (device machine: one H100/H200, Python 3.12, jax with CUDA, no
# package index). Carry .wheels (../shared/tools/device-wheels.sh) and an EG3D checkout in
# .eg3d/eg3d. Writes logs and JSON to $OUT.
set -u
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps .wheels/*.whl 2>&1 | tail -1
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import jax, flax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, jax.devices())"
echo "== parity tests on the GPU (float32, matmul precision highest)"
JAX_PLATFORMS=cuda timeout 180 python3 -m pytest -q -x -p no:cacheprovider tests/test_eg3d_parity.py 2>&1 | tail -6
echo "== FFHQ-512 G_ema forward: JAX vs official EG3D (same weights)"
timeout 150 python3 bench/generator.py --configs ffhq512 --batch 1,8 --iters 5 \
    --eg3d-src .eg3d/eg3d --torch-device cuda --json "$OUT/ffhq512_fp32_vs_eg3d.json" 2>&1 | grep -v Warn
echo "== JAX batch sampling throughput, float32 and bfloat16"
timeout 110 python3 bench/generator.py --configs ffhq512 --batch 32,64 --iters 5 --json "$OUT/ffhq512_fp32.json"
timeout 120 python3 bench/generator.py --configs ffhq512 --batch 1,8,32,64 --iters 5 --dtype bfloat16 \
    --json "$OUT/ffhq512_bf16.json"
