#!/usr/bin/env bash
# Create the SCALE-Sim adapter's own virtualenv (default: .venv-scalesim at the repo root).
#
#   adapters/scalesim/setup_env.sh [VENV_DIR]
#
# SCALE-Sim (PyPI `scalesim`) depends on numba, which pins numpy < 2.3; the core llmsim
# environment uses numpy 2.4, so the adapter runs from this separate interpreter. The repo
# root is put on the venv's path (a .pth file) so `python -m adapters.scalesim` and the
# generated `llmsim.v1` protobuf modules import without installing llmsim itself (whose
# dependencies would pull numpy 2.4 back in).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.venv-scalesim}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$here/requirements.txt"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$root" > "$site/llmsim_repo.pth"
"$venv/bin/python" -c 'import scalesim.scale_sim, numpy; print("scalesim ok, numpy", numpy.__version__)'
