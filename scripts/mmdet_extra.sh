#!/usr/bin/env bash
# Install the optional `mmdet` extra into .venv: mmcv 2.1.0 with compiled ops (built from its
# sdist against the project's torch, ~20 min on 2 cores, then cached), mmengine 0.10.7 and
# mmdet 3.3.0 (docs/design.md, "Environment"). The wheel is cached outside the checkout, keyed by the torch
# version and the Python tag, and reused by later set-ups.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
CACHE=${GFL_REPRO_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/gfl-repro/wheels}
torch_version=$($PY -c "import torch; print(torch.__version__.replace('+', '_'))")
pytag=$($PY -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
dir="$CACHE/mmcv-2.1.0-torch$torch_version-$pytag"

if $PY -c "import mmcv, mmdet, mmengine; from mmcv.ops import batched_nms" 2>/dev/null; then
  echo "mmdet extra: already installed"; exit 0
fi
if ! ls "$dir"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "==> building mmcv 2.1.0 with ops against torch $torch_version (once; cached in $dir)"
  .venv/bin/pip install --progress-bar off ninja "setuptools<70" wheel numpy
  mkdir -p "$dir"
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
    .venv/bin/pip wheel --no-deps --no-build-isolation --progress-bar off -w "$dir.tmp" mmcv==2.1.0
  mv "$dir.tmp"/mmcv-2.1.0-*.whl "$dir"/ && rmdir "$dir.tmp"
fi
echo "==> installing mmcv (cached wheel), mmengine 0.10.7, mmdet 3.3.0"
.venv/bin/pip install --progress-bar off --no-deps "$dir"/mmcv-2.1.0-*.whl
.venv/bin/pip install --progress-bar off mmengine==0.10.7 mmdet==3.3.0
$PY -c "import mmcv, mmdet, mmengine; from mmcv.ops import batched_nms; print('mmdet extra ready:', mmdet.__version__, mmcv.__version__)"
