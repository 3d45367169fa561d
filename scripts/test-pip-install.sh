#!/usr/bin/env bash
# `pip install ./python` in a fresh virtual environment, then the README's Python example, with no
# other step: no `make`, no SPARKV_LIBRARY (the wheel builds and carries libsparkv.so).
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
echo "[pip-install] pip install ./python into a fresh virtual environment" >&2
"$work/venv/bin/pip" install -q ./python
# The first ```python block of the README is its Python example.
awk '/^```python$/ {on = 1; next} on && /^```$/ {exit} on {print}' README.md > "$work/example.py"
test -s "$work/example.py"
(cd "$work" && env -u SPARKV_LIBRARY "$work/venv/bin/python" example.py)
"$work/venv/bin/python" - <<'PY'
import pathlib, sparkv._lib as lib
path = pathlib.Path(lib.load()._name)
assert path.parent.name == "sparkv" and "site-packages" in str(path), f"loaded {path}, not the wheel's library"
print(f"[pip-install] the README example ran on the wheel's {path.name}")
PY
