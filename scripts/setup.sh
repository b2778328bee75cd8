#!/usr/bin/env bash
# Set up gfl-repro on a fresh machine: .venv/ with a working torch/torchvision pair, the
# package installed editable with its test extras, and the system tools the tests use.
# Idempotent: a second run only checks.
#
# Why the torch step is special: pip here prefers a local CPU wheel of torch 2.13.0, but
# the only torchvision 0.28.0 on the registry is a CUDA build that fails at import against
# that CPU wheel ("operator torchvision::nms does not exist"). The registry's CUDA build of
# torch 2.13.0 with torchvision 0.28.0 imports and runs torchvision.ops on CPU, so we
# install that pair with the local wheel hidden from pip (docs/design.md, "Environment").
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
TORCH_PAIR=(torch==2.13.0 torchvision==0.28.0)

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

ops_work() {
  .venv/bin/python - <<'PY' 2>/dev/null
import torch, torchvision.ops as ops
ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
ops.deform_conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 18, 3, 3), torch.zeros(1, 1, 3, 3), padding=1)
PY
}

if ! ops_work; then
  step "installing ${TORCH_PAIR[*]} (CUDA build from the registry; runs on CPU; ~5 GB)"
  env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null .venv/bin/pip install --progress-bar off "${TORCH_PAIR[@]}"
  ops_work || { echo "setup: torchvision.ops still fails after installing ${TORCH_PAIR[*]}" >&2; exit 1; }
fi

stamp=.venv/.gfl-repro-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing gfl-repro (editable) with test extras"
  .venv/bin/pip install --progress-bar off -e '.[test]'
  echo "$want" > "$stamp"
fi

# The optional mmdet extra (mmcv 2.1.0 built once against this torch and cached, mmengine,
# mmdet 3.3.0): the parity tests run live against it. GFL_REPRO_SKIP_MMDET=1 skips it.
if [ "${GFL_REPRO_SKIP_MMDET:-0}" != 1 ]; then
  bash scripts/mmdet_extra.sh
fi

# System tools the tests use: pdflatex (the LaTeX check) and a one-node Slurm cluster
# (slurmctld, slurmd, the clients and munge; the tests start and stop the daemons).
missing=()
command -v pdflatex >/dev/null 2>&1 || missing+=(texlive-latex-base texlive-latex-recommended)
[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && command -v sbatch >/dev/null 2>&1 \
  || missing+=(slurmctld slurmd slurm-client)
[ -x /usr/sbin/munged ] || missing+=(munge)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    step "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: cannot install ${missing[*]} (need root and apt-get); the tests that use them will be skipped" >&2
  fi
fi
echo "setup: ready (.venv/bin/gfl-repro)"
