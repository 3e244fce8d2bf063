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
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
SUDO=$([[ $(id -u) == 0 ]] && echo "" || echo sudo)
if ((${#missing[@]})); then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${missing[@]}"
fi
# nats-server 2.10 or newer: cluster mode refuses 2.9 (Debian bookworm's),
# whose clustered streams were seen to order messages differently on
# different nodes. Bookworm takes it from trixie, pinned so that nothing
# else comes from there.
nats_recent() {
    local bin version
    bin=$(command -v nats-server || echo /usr/sbin/nats-server)
    version=$("$bin" --version 2>/dev/null | sed -n 's/^nats-server: v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
    read -r major minor <<<"$version" || return 1
    ((major > 2 || (major == 2 && minor >= 10)))
}
if ! nats_recent; then
    if [[ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" == bookworm ]]; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
            $SUDO tee /etc/apt/sources.list.d/trixie-nats.sources >/dev/null
        printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' | $SUDO tee /etc/apt/preferences.d/trixie-nats >/dev/null
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq -t trixie nats-server
    else
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq nats-server
    fi
    nats_recent || { echo "nats-server 2.10 or newer is needed (found: $(nats-server --version 2>&1))" >&2; exit 1; }
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
echo "== model test with 8-record chunks (almost every record read back cold)"
cargo test -p bursar-core --features small-chunks --test model
