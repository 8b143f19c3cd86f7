#!/usr/bin/env bash
# One prepared check for a CUDA machine: calibration, sim-vs-real validation and the
# GPU tests, in under 8 minutes; figures and logs go to $OUT (default ./gpu_results).
#
#   bash benchmarks/gpu_check.sh            # or: OUT=/somewhere PYTHON=/path/python bash ...
#
# Picks a Python that imports torch (preferring one with CUDA): $PYTHON, .venv/bin/python,
# python3, python. If llmos_sim is not installed for it, it imports the working tree through a
# shim folder (llmos_sim/ with backends/ and configs/ linked in, as setup.py maps them).
# Never aborts early: every stage has its own time limit and its result is recorded.
set -u
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT="${OUT:-./gpu_results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

pick_python() {
  local best="" c
  for c in "${PYTHON:-}" "$ROOT/.venv/bin/python" python3 python; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || continue
    if "$c" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 3)" >/dev/null 2>&1; then
      echo "$c"; return 0
    fi
    if [ -z "$best" ] && "$c" -c "import torch" >/dev/null 2>&1; then best="$c"; fi
  done
  [ -n "$best" ] && { echo "$best"; return 0; }
  return 1
}

PY="$(pick_python)" || { say "no Python with torch found (tried \$PYTHON, .venv, python3, python)"; PY="python3"; }
say "python: $PY"
{ echo "## nvidia-smi"; nvidia-smi 2>&1 || true; echo "## python"; "$PY" -V 2>&1; } > "$OUT/env.txt"

if ! "$PY" -c "import llmos_sim.backends.torch_gpu" >/dev/null 2>>"$LOG"; then
  SHIM="$(mktemp -d)"
  mkdir -p "$SHIM/llmos_sim"
  for f in "$ROOT"/llmos_sim/* "$ROOT"/llmos_sim/.[!.]*; do [ -e "$f" ] && ln -s "$f" "$SHIM/llmos_sim/"; done
  ln -sfn "$ROOT/backends" "$SHIM/llmos_sim/backends"
  ln -sfn "$ROOT/configs" "$SHIM/llmos_sim/configs"
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
  say "llmos_sim not installed for $PY: using the working tree through $SHIM"
fi
"$PY" -c "import llmos_sim.backends.torch_gpu, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  >> "$OUT/env.txt" 2>&1 || say "cannot import llmos_sim.backends.torch_gpu (see env.txt)"

export MPLBACKEND=Agg
"$PY" "$ROOT/benchmarks/gpu_check.py" --out "$OUT" --python "$PY" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "done (rc=$rc); results in $OUT"
exit "$rc"
