#!/usr/bin/env bash
# Download official SAM 2.1 checkpoints: checkpoints/download.sh [tiny|small|base_plus|large|all]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=python3
[ -x "$here/../.venv/bin/python" ] && py="$here/../.venv/bin/python"
exec "$py" "$here/download.py" "$@"
