#!/usr/bin/env bash
# The full test suite: formatting, lints, and every test in the workspace.
# Installs what a fresh machine lacks: the Python tools the OpenAPI test
# (crates/cli/tests/openapi.rs) runs, in a venv at .venv-test/.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== system packages"
# Debian packages the tests run (installed only when missing).
# nats-server and PostgreSQL are real components of the relay and read-model
# tests (each test starts its own instance in a temp dir on a free port).
missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
    SUDO=$([[ $(id -u) == 0 ]] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}"
fi

echo "== python test tools"
# Pinned (hypothesis too: it generates schemathesis's cases, so a fixed seed
# means the same run); change a pin and the venv is rebuilt on the next run.
PY_TOOLS=(schemathesis==4.32.5 hypothesis==6.170.15 openapi-spec-validator==0.9.0)
VENV=.venv-test
STAMP="$VENV/.installed"
PYTHON=${BURSAR_TEST_PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -x $VENV/bin/python || "$(cat "$STAMP" 2>/dev/null)" != "${PY_TOOLS[*]}" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
    echo "${PY_TOOLS[*]}" > "$STAMP"
fi
"$VENV/bin/schemathesis" --version
BURSAR_SCHEMATHESIS="$PWD/$VENV/bin/schemathesis"
BURSAR_OPENAPI_VALIDATOR="$PWD/$VENV/bin/python"
export BURSAR_SCHEMATHESIS BURSAR_OPENAPI_VALIDATOR

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace
