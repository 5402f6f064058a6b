# Shared by the scripts: project root, venv, and small helpers. Source it; do not run it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"; return 1; fi
}

apt_install() {
  # Installs Debian packages that are missing; one apt-get update per run.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq; _APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_venv REQUIREMENTS_FILE: a virtual environment in .venv with the locked packages. Both
# requirement files are locks with PyPI's hashes (regenerated as requirements.in says), so pip
# refuses any package or file the lock does not name. The checkout itself is installed editable
# with the lock's setuptools (no build isolation: nothing unpinned is fetched to build it).
ensure_venv() {
  local req="$1" stamp
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv python3-pip; fi
  [ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
  stamp=".venv/.installed-$(cat "$req" requirements.txt pyproject.toml | sha1sum | cut -c1-12)-$(basename "$req")"
  if [ ! -e "$stamp" ]; then
    say "installing $req into .venv"
    .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r "$req"
    .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    touch "$stamp"
  fi
  export PATH="$ROOT/.venv/bin:$PATH"
}
