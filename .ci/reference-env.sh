#!/usr/bin/env bash
# (A copy of ../shared/reference-env/setup.sh, so that CI needs nothing outside the project.)
# Build the reference environment for torchvision.datasets.Kinetics (0.28,
# decoding through torchcodec) and PyTorchVideo 0.1.5 on a CPU-only Debian
# bookworm / Python 3.11 machine. Idempotent: safe to re-run; it only installs
# what is missing. Downloads only through apt-get and pip (nothing else).
#
#   REF_VENV=/tmp/ref-venv bash setup.sh        # default path shown
#   REF_WITH_PTV=0 bash setup.sh                # skip PyTorchVideo
#
# What it does:
#   1. apt: Debian's FFmpeg 5.1 shared libraries (package ffmpeg, which also
#      gives ffprobe); torchcodec dlopens libavcodec.so.59 & co from there.
#   2. venv at $REF_VENV with torch 2.13.0 (the CPU wheel pip finds locally),
#      numpy, pillow, av (PyAV, for making test videos / PyTorchVideo).
#   3. torchcodec 0.13.0: the newest torchcodec whose PyPI Linux wheel is a CPU
#      build (0.14+ wheels link libtorch_cuda/libc10_cuda/libnvrtc/libcudart
#      and cannot load next to the CPU torch). Its README table gives
#      torch >= 2.11 for 0.12/0.13 (stable-ABI builds), so 2.13 is covered.
#   4. torchvision 0.28.0 with --no-deps (PyPI only has the CUDA build). Its
#      compiled ops (_C.so) cannot load against the CPU torch, and two modules
#      then fail at import (they register fake/autograd kernels for the missing
#      torchvision:: ops), so they are replaced by empty files. Datasets,
#      transforms and models import and work; torchvision.ops' compiled
#      kernels (nms, roi_align, ...) and torchvision.io image decoding do not.
#   5. pytorchvideo 0.1.5 (+ fvcore, iopath, parameterized) and a shim module
#      torchvision/transforms/functional_tensor.py (removed in torchvision
#      0.17, still imported by pytorchvideo.transforms).
set -euo pipefail

REF_VENV="${REF_VENV:-/tmp/ref-venv}"
REF_PYTHON="${REF_PYTHON:-python3}"
REF_WITH_PTV="${REF_WITH_PTV:-1}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"
TORCHCODEC_VERSION="${TORCHCODEC_VERSION:-0.13.0}"
AV_VERSION="${AV_VERSION:-18.1.0}"
NUMPY_VERSION="${NUMPY_VERSION:-2.4.6}"
PILLOW_VERSION="${PILLOW_VERSION:-13.0.0}"
PTV_VERSION="${PTV_VERSION:-0.1.5}"

log() { printf '[reference-env] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- 1. apt
need_apt=0
LDCACHE="$(ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true)"
for lib in libavcodec.so.59 libavformat.so.59 libavutil.so.57 libswscale.so.6 \
           libswresample.so.4 libavfilter.so.8 libavdevice.so.59; do
  grep -qF "$lib" <<<"$LDCACHE" || need_apt=1
done
command -v ffprobe >/dev/null 2>&1 || need_apt=1
if [ "$need_apt" = 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "installing Debian FFmpeg shared libraries (apt-get install ffmpeg)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
else
  log "FFmpeg shared libraries already present"
fi

# ---------------------------------------------------------------- 2. venv
if [ ! -x "$REF_VENV/bin/python" ]; then
  log "creating venv $REF_VENV"
  "$REF_PYTHON" -m venv "$REF_VENV"
fi
PY="$REF_VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

have() {  # have DIST VERSION-PREFIX : is DIST installed at that version?
  "$PY" - "$1" "$2" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
v = version(sys.argv[1])
sys.exit(0 if v == sys.argv[2] or v.startswith(sys.argv[2] + "+") else 1)
EOF
}

if ! have torch "$TORCH_VERSION"; then
  log "installing torch==$TORCH_VERSION (CPU wheel from the local wheel directory)"
  "${PIP[@]}" "torch==$TORCH_VERSION"
fi
have torch "$TORCH_VERSION" || { log "torch $TORCH_VERSION did not install"; exit 1; }

for spec in "numpy==$NUMPY_VERSION" "pillow==$PILLOW_VERSION" "av==$AV_VERSION"; do
  name="${spec%%==*}"; ver="${spec##*==}"
  have "$name" "$ver" || { log "installing $spec"; "${PIP[@]}" "$spec"; }
done
"$PY" -c "import torch,sys; sys.exit(0 if torch.version.cuda is None else 1)" \
  || log "warning: installed torch is a CUDA build; the torchcodec 0.13 CPU wheel expects the CPU build"

# ---------------------------------------------------------------- 3. torchcodec
if ! have torchcodec "$TORCHCODEC_VERSION"; then
  log "installing torchcodec==$TORCHCODEC_VERSION (--no-deps; it has no torch pin)"
  "${PIP[@]}" --no-deps "torchcodec==$TORCHCODEC_VERSION"
fi

# ---------------------------------------------------------------- 4. torchvision
if ! have torchvision "$TORCHVISION_VERSION"; then
  log "installing torchvision==$TORCHVISION_VERSION --no-deps"
  "${PIP[@]}" --no-deps "torchvision==$TORCHVISION_VERSION"
fi
SP="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
TV="$SP/torchvision"
for f in _meta_registrations.py _autograd_registrations.py; do
  if [ -s "$TV/$f" ]; then
    log "patching torchvision/$f -> empty (compiled torchvision ops are unavailable on CPU torch)"
    : > "$TV/$f"
  fi
done

# ---------------------------------------------------------------- 5. pytorchvideo
if [ "$REF_WITH_PTV" = 1 ]; then
  if ! have pytorchvideo "$PTV_VERSION"; then
    log "installing pytorchvideo==$PTV_VERSION (sdist) + fvcore, iopath, parameterized"
    # torch is already satisfied, so nothing CUDA is pulled in.
    "${PIP[@]}" "pytorchvideo==$PTV_VERSION"
  fi
  SHIM="$TV/transforms/functional_tensor.py"
  if [ ! -f "$SHIM" ]; then
    log "adding shim torchvision/transforms/functional_tensor.py for pytorchvideo.transforms"
    cat > "$SHIM" <<'EOF'
# shim added by setup.sh: torchvision removed this module in 0.17;
# pytorchvideo 0.1.5 (transforms/augmentations.py) still imports it.
from torchvision.transforms._functional_tensor import *  # noqa: F401,F403
EOF
  fi
fi

# ---------------------------------------------------------------- check
"$PY" - "$REF_WITH_PTV" <<'EOF'
import sys
import torch, torchvision, torchcodec, av, numpy
from torchcodec.decoders import VideoDecoder, AudioDecoder  # loads the FFmpeg core
from torchvision.datasets import Kinetics  # noqa: F401
print(f"torch {torch.__version__} | torchvision {torchvision.__version__} | torchcodec {torchcodec.__version__} "
      f"| av {av.__version__} | numpy {numpy.__version__}")
if sys.argv[1] == "1":
    import pytorchvideo, pytorchvideo.data, pytorchvideo.transforms  # noqa: F401
    print(f"pytorchvideo {pytorchvideo.__version__}")
EOF
# shardkin's own dependencies, so that tests run shardkin from the source tree (PYTHONPATH)
# beside the real torchvision in this environment (numba: the presets' one pass, its `fast`
# extra)
"${PIP[@]}" "tqdm>=4.60" "braceexpand>=0.1.7" "xxhash>=3.0" "numba>=0.61"
log "ok: activate with  source $REF_VENV/bin/activate"
