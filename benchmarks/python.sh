# Sourced by the benchmark wrappers after they set $root: PYTHON (default: the project's .venv/bin/python, else
# python3), and its folder first on PATH so that fairseq's console scripts of that environment are the ones run.
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PYTHON="$root/.venv/bin/python"; else PYTHON=$(command -v python3); fi
fi
export PATH="$(dirname "$PYTHON"):$PATH"
