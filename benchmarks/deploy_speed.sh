#!/usr/bin/env bash
# Deployment speed of a trained model: fairseq-generate (plugin) vs fairseq-generate (exported) vs CTranslate2.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bash benchmarks/deploy_speed.sh --checkpoint CKPT.pt --data DATA_BIN --spm spm.model --reference REF.txt
                                       [--beam 4] [--lenpen 0.6] [--batch-size 32] [--threads 1]
                                       [--rows plugin,exported,ct2-float32,ct2-int8] [--score-sentences 100]
                                       [--work DIR] [--out FILE.json] [-h|--help]

Exports CKPT with fairseq-admin-export, converts the export with CTranslate2's ct2-fairseq-converter, translates the
binarized test subset four ways (each in a fresh process, same beam / length penalty / max length) and reports
sentences/s of the translation loop, the process's wall time and peak RSS, sacreBLEU against REF and the command of
each row, plus the teacher-forced log-probability agreement plugin vs exported vs CTranslate2 float32.
Writes FILE.json and FILE.md (default benchmarks/work/deploy/deploy_speed.json; benchmarks/work is git-ignored).
Needs ctranslate2 (pip install -e '.[deploy]') for the ct2 rows. On a shared machine run it under the CPU lock:
  OMP_NUM_THREADS=1 flock /tmp/fairseq_admin.cpu.lock bash benchmarks/deploy_speed.sh ...
Environment: PYTHON (default: the project's .venv/bin/python, else python3).
USAGE
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/benchmarks/python.sh"  # PYTHON, and its bin/ first on PATH
for a in "$@"; do
  case "$a" in -h|--help) usage; exit 0 ;; esac
done
if [ $# -eq 0 ]; then usage >&2; exit 2; fi
echo "[deploy_speed.sh] $PYTHON $root/benchmarks/deploy_speed.py $*"
exec "$PYTHON" "$root/benchmarks/deploy_speed.py" "$@"
