# Shared set-up for bin/studio and bin/test: a project virtualenv with every dependency, and the offline LPIPS
# backbone weights. Idempotent: a second run only checks what is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtualenv in .venv"
  "$PYTHON" -m venv "$VENV"
fi
# STUDIO_TORCH_INDEX_URL: an extra package index for torch, e.g. https://download.pytorch.org/whl/cpu for the
# CPU-only build (about 5 GB less than PyPI's CUDA build); unset, everything comes from the default index.
TORCH_INDEX="${STUDIO_TORCH_INDEX_URL:-}"
index_args=()
install_key="$(sha256sum pyproject.toml)"
if [ -n "$TORCH_INDEX" ]; then
  index_args=(--extra-index-url "$TORCH_INDEX")
  install_key="$( (cat pyproject.toml; echo "$TORCH_INDEX") | sha256sum)"
fi
stamp="$VENV/.installed-$(echo "$install_key" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the studio and its dependencies (first run takes a few minutes)${TORCH_INDEX:+; torch also from $TORCH_INDEX}"
  "$VENV/bin/pip" install -q --disable-pip-version-check ${index_args[@]+"${index_args[@]}"} -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import torch, lpips, django, channels, celery" # fail loudly if the install did not work
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
"$ROOT/bin/fetch-weights"
export PATH="$VENV/bin:$PATH"
