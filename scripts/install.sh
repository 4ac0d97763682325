#!/usr/bin/env bash
# Create .venv from the package registries alone and install the suite with all its extras.
#   torch/torchvision: the CUDA build pair from PyPI (runs on CPU too; the PyPI torchvision wheels
#   need it). mmcv 2.1.0: built from source with its ops (CUDA ops when torch sees a GPU), the wheel
#   cached in $QWT_WHEEL_CACHE (default ~/.cache/qwt/wheels) so later installs skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.13.0,!=2.13.0+cpu"}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-"torchvision==0.28.0"}
CACHE=${QWT_WHEEL_CACHE:-$HOME/.cache/qwt/wheels}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
echo "[install] torch / torchvision ($TORCH_SPEC, $TORCHVISION_SPEC)"
$PIP install -q "$TORCH_SPEC" "$TORCHVISION_SPEC"
echo "[install] build tools and mmcv's runtime dependencies"
# mmcv's setup.py needs setuptools<82 and must build against the installed torch (no isolation).
$PIP install -q "setuptools<82" wheel ninja opencv-python-headless "mmengine>=0.10.7,<0.11" addict yapf

TAG=$("$VENV/bin/python" -c "import torch; print(torch.__version__.replace('+', '_') + ('-cuda' if torch.cuda.is_available() else '-cpu'))")
WHEELS="$CACHE/$TAG"
if ! ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  echo "[install] building mmcv 2.1.0 from source with ops into $WHEELS (about 10 minutes on 2 cores)"
  mkdir -p "$WHEELS"
  (cd "$(mktemp -d)" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
     "$OLDPWD/$VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps mmcv==2.1.0 -w "$WHEELS")
else
  echo "[install] using cached mmcv wheel from $WHEELS"
fi
$PIP install -q --no-deps "$WHEELS"/mmcv-2.1.0-*.whl
echo "[install] qwt-bench with detection and dev extras"
$PIP install -q -e ".[detection,dev]"
# mmengine depends on opencv-python, which needs libGL; keep only the headless build (same cv2 API).
if $PIP show -q opencv-python >/dev/null 2>&1; then
  $PIP uninstall -q -y opencv-python
  $PIP install -q --force-reinstall --no-deps opencv-python-headless
fi
"$VENV/bin/python" - <<'PY'
import cv2, torch, timm, torchvision, mmcv, mmdet, mmengine
from mmcv.ops import RoIAlign, nms  # compiled ops present
print(f"[install] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
      f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmengine {mmengine.__version__}")
PY
