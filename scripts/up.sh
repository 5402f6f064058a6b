#!/usr/bin/env bash
# The embedded run: a virtual environment with the server's packages, then `ailuro up` (SQLite,
# web server, loops and local pilots in one process group; Ctrl-C stops it all).
source "$(dirname "$0")/lib/common.sh"
ensure_venv requirements.txt
exec .venv/bin/ailuro up "$@"
