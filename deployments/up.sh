#!/usr/bin/env bash
# Bring up what `prefect deployment run train-pipeline/default` needs, from this checkout:
#   1. a Prefect server: with $PREFECT_API_URL set, the one there (started here if it is a local
#      address where nothing answers); without it, the server an earlier up.sh started (if it still
#      runs), else a new one on 127.0.0.1 (SQLite under $PREFECT_HOME) on $PREFECT_SERVER_API_PORT,
#      or 4200, or a free port when 4200 is taken -- never a server someone else started on 4200;
#   2. the process work pool (train-pipeline-process) if it is missing;
#   3. the deployments of prefect.yaml (`prefect --no-prompt deploy --all`);
#   4. a worker on the pool, in the background.
# Pid and log files go to $TRAIN_PIPELINE_STATE_DIR (default <checkout>/.prefect). Idempotent: what
# already runs is reused. Stop with deployments/down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
POOL="${TRAIN_PIPELINE_WORK_POOL:-train-pipeline-process}"
STATE="${TRAIN_PIPELINE_STATE_DIR:-$ROOT/.prefect}"
PY="${PYTHON:-python}"
mkdir -p "$STATE"

die() { echo "up.sh: error: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
healthy() { "$PY" - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1].rstrip("/") + "/health", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# A background job in its own process group (job control on): a Ctrl-C in this terminal does not
# reach it, and it keeps SIGINT (a plain `cmd &` in a script ignores SIGINT, and a Prefect worker
# then cannot be stopped gracefully). down.sh signals the group.
background() {
    set -m
    nohup "$@" </dev/null &
    set +m
}

command -v prefect >/dev/null || die "the prefect command is not installed; run: pip install -e ."
[ -f prefect.yaml ] || die "prefect.yaml not found in $ROOT"

# -- 1. server -----------------------------------------------------------------------------
port_free() { "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: a TIME_WAIT is no owner
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}
any_free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_server() {  # start_server PORT: a local server started here (down.sh stops it)
    PORT="$1"
    echo "up.sh: starting a Prefect server on 127.0.0.1:$PORT (log: $STATE/server.log)"
    # The UI asks the API at PREFECT_SERVER_API_HOST:PORT (not --port): without these it would
    # look for it on 4200, another server or none.
    PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}" \
        PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT="$PORT" \
        background prefect server start --host 127.0.0.1 --port "$PORT" >"$STATE/server.log" 2>&1
    echo $! >"$STATE/server.pid"
    API_URL="http://127.0.0.1:$PORT/api"
    for _ in $(seq 1 180); do
        healthy "$API_URL" && break
        alive "$STATE/server.pid" || die "the Prefect server exited; see $STATE/server.log"
        sleep 0.5
    done
    healthy "$API_URL" || die "the Prefect server did not answer within 90 s; see $STATE/server.log"
}

if [ -n "${PREFECT_API_URL:-}" ]; then  # yours: use it, or start it when it is a local address
    API_URL="${PREFECT_API_URL%/}"
    if healthy "$API_URL"; then
        echo "up.sh: using the Prefect server at $API_URL (PREFECT_API_URL)"
    else
        hostport="${API_URL#*://}"; hostport="${hostport%%/*}"
        case "$hostport" in
            127.0.0.1:*|localhost:*)
                port_free "${hostport##*:}" \
                    || die "PREFECT_API_URL=$API_URL: port ${hostport##*:} is taken by something that is not a Prefect server; choose another port in PREFECT_API_URL"
                start_server "${hostport##*:}" ;;
            *) die "no Prefect server answers at $API_URL; start it, or unset PREFECT_API_URL for a local one" ;;
        esac
    fi
elif alive "$STATE/server.pid" && [ -f "$STATE/api_url" ] && healthy "$(cat "$STATE/api_url")"; then
    API_URL="$(cat "$STATE/api_url")"  # ours, from an earlier up.sh
    echo "up.sh: using the Prefect server up.sh started earlier at $API_URL (pid $(cat "$STATE/server.pid"))"
elif [ -n "${PREFECT_SERVER_API_PORT:-}" ]; then
    port_free "$PREFECT_SERVER_API_PORT" \
        || die "PREFECT_SERVER_API_PORT=$PREFECT_SERVER_API_PORT: that port is taken (another server?); choose a free port, or set PREFECT_API_URL to use the server there"
    start_server "$PREFECT_SERVER_API_PORT"
elif port_free 4200; then
    start_server 4200
else
    echo "up.sh: 127.0.0.1:4200 is taken (someone else's Prefect server?); not using it (set PREFECT_API_URL to use a server there)"
    start_server "$(any_free_port)"
fi
export PREFECT_API_URL="$API_URL"
echo "$API_URL" >"$STATE/api_url"

# -- 2. work pool --------------------------------------------------------------------------
if prefect work-pool inspect "$POOL" >/dev/null 2>&1; then
    echo "up.sh: work pool $POOL exists"
else
    prefect work-pool create "$POOL" --type process >/dev/null || die "could not create work pool $POOL"
    echo "up.sh: created work pool $POOL (process)"
fi

# -- 3. deployments ------------------------------------------------------------------------
prefect --no-prompt deploy --all >"$STATE/deploy.log" 2>&1 || { cat "$STATE/deploy.log" >&2; die "prefect deploy failed"; }
echo "up.sh: deployed $(grep -o "Deployment '[^']*'" "$STATE/deploy.log" | sort -u | tr '\n' ' ')"

# -- 4. worker -----------------------------------------------------------------------------
if alive "$STATE/worker.pid"; then
    echo "up.sh: worker already running (pid $(cat "$STATE/worker.pid"))"
else
    background prefect worker start --pool "$POOL" --type process >"$STATE/worker.log" 2>&1
    echo $! >"$STATE/worker.pid"
    for _ in $(seq 1 120); do
        grep -q "started" "$STATE/worker.log" 2>/dev/null && break
        alive "$STATE/worker.pid" || die "the worker exited; see $STATE/worker.log"
        sleep 0.5
    done
    echo "up.sh: worker started on pool $POOL (pid $(cat "$STATE/worker.pid"), log: $STATE/worker.log)"
fi

cat <<EOF
up.sh: ready (the server's address is also in $STATE/api_url). In this shell:
  export PREFECT_API_URL=$API_URL
  prefect deployment run train-pipeline/default      # UI: ${API_URL%/api}
EOF
