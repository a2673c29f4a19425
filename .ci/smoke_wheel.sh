#!/usr/bin/env bash
# The package as a user gets it: build the sdist and the wheel, install the wheel WITHOUT
# extras in a clean venv (the command line, the library, and a missing extra named in one
# line), then with [sim] to run the simulator that the extra-less install collects from and
# exports; last, install the sdist to show it builds. Installs take constraints.txt, the set
# CI tests with (and the warm pip cache), so this stays well under 2 minutes.
#
#   .ci/smoke_wheel.sh            (make dist-check; .ci/run calls it after make test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_PYTHON=${BUILD_PYTHON:-$ROOT/.venv/bin/python}  # has `build` (the dev extra)
PYTHON=${PYTHON:-python3}                             # what the clean venvs are made from

work=$(mktemp -d)
sim_pid=
cleanup() {
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s (%s s)\n' "$*" "$SECONDS"; }
fail() { echo "smoke_wheel: FAILED: $*" >&2; exit 1; }
install() {  # install VENV ARGS...: pip install into a venv, quietly, at CI's versions
  local venv=$1; shift
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$ROOT/constraints.txt" "$@"
}

step "build the sdist and the wheel"
"$BUILD_PYTHON" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "python -m build"; }
wheel=$(ls "$work"/dist/marketspine-*.whl)
sdist=$(ls "$work"/dist/marketspine-*.tar.gz)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' src/marketspine/__init__.py)
[ -n "$version" ] || fail "no __version__ in src/marketspine/__init__.py"
echo "$(basename "$wheel") $(basename "$sdist")"
case "$wheel" in *"-$version-"*) ;; *) fail "the wheel's version is not __version__ ($version)";; esac

step "the wheel without extras, in a clean venv"
"$PYTHON" -m venv "$work/core"
install "$work/core" "$wheel"
core=$work/core/bin
"$core/marketspine" --help >/dev/null
shown=$("$core/marketspine" --version)
[ "$shown" = "marketspine, version $version" ] || fail "--version printed '$shown'"
echo "$shown"
"$core/python" - "$version" <<'EOF'
import importlib.util
import sys

import marketspine
from marketspine import Candle, Spine  # noqa: F401

assert marketspine.__version__ == sys.argv[1], marketspine.__version__
# The core install brings none of the extras' packages.
extras = ["starlette", "uvicorn", "plotly", "prometheus_client", "numpy", "redis", "psycopg",
          "pandas", "polars", "pyarrow"]
present = [name for name in extras if importlib.util.find_spec(name) is not None]
assert not present, f"installed without extras, yet present: {present}"
print("from marketspine import Spine, Candle: ok; no optional package installed")
EOF
set +e
"$core/marketspine" serve --port 0 >"$work/serve.out" 2>"$work/serve.err"
code=$?
set -e
cat "$work/serve.err"
[ "$code" = 2 ] || fail "marketspine serve without the serve extra exited $code, not 2"
[ "$(wc -l <"$work/serve.err")" = 1 ] || fail "marketspine serve printed more than one line"
grep -q "pip install 'marketspine\[serve\]'" "$work/serve.err" || fail "the line does not name the serve extra"

step "the wheel with [sim]: marketspine sim on a loopback port"
"$PYTHON" -m venv "$work/sim"
install "$work/sim" "$wheel[sim]"
"$work/sim/bin/marketspine" sim --host 127.0.0.1 --port 0 >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
url=
for _ in $(seq 1 300); do  # it prints its URL once listening
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/sim.out" || true)
  [ -n "$url" ] && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err"; fail "marketspine sim exited"; }
  sleep 0.1
done
[ -n "$url" ] || fail "marketspine sim printed no URL within 30 s"
echo "marketspine sim at $url"

step "collect and export with the extra-less install, from the simulator"
"$core/marketspine" collect KRW-BTC KRW-ETH -t 1m --since 2026-01-01 --until 2026-01-01T12:00 \
  --upstream "$url" --db "$work/smoke.db" --json | tee "$work/collect.json"
grep -q '"candles_written":1440,' "$work/collect.json" || fail "collect did not write 2 x 720 candles"
"$core/marketspine" export KRW-BTC -t 5m --since 2026-01-01 --until 2026-01-01T12:00 \
  --db "$work/smoke.db" --out "$work/btc.csv"
rows=$(($(wc -l <"$work/btc.csv") - 1))
header=$(head -1 "$work/btc.csv" | tr -d '\r')  # the csv module ends rows with CRLF
[ "$header" = time_utc,open,high,low,close,volume,value ] || fail "export's header: $header"
[ "$rows" -gt 100 ] || fail "export wrote $rows rows of 12 hours of 5m candles"
echo "exported $rows 5m candles"
"$core/marketspine" status --db "$work/smoke.db" --json >/dev/null

step "the sdist builds and installs"
install "$work/core" --force-reinstall --no-deps "$sdist"
shown=$("$core/marketspine" --version)
[ "$shown" = "marketspine, version $version" ] || fail "the sdist's --version printed '$shown'"
echo "$shown (from $(basename "$sdist"))"

echo
echo "smoke_wheel: ok"
