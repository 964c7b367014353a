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
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing the studio and its dependencies (first run takes a few minutes)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV/bin/python" -c "import torch, lpips, django, channels, celery" # fail loudly if the install did not work
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
"$ROOT/bin/fetch-weights"
export PATH="$VENV/bin:$PATH"
