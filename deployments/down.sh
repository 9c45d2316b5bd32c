#!/usr/bin/env bash
# Stop what deployments/up.sh started: the worker first (SIGINT: a worker ignores SIGTERM for a
# while), then the local server if up.sh started one. A server that was already running (your
# PREFECT_API_URL) is left alone.
set -uo pipefail
cd "$(dirname "$0")/.."
STATE="${TRAIN_PIPELINE_STATE_DIR:-$PWD/.prefect}"

gone() {  # gone PID SECONDS: waits until PID has exited
    local i
    for ((i = 0; i < $2 * 2; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.5
    done
    return 1
}

# stop NAME PIDFILE: SIGINT and wait; then SIGTERM, then SIGKILL to its process group (up.sh
# started it as a job of its own, so the group is its pid: the server's and worker's children go too).
stop() {
    local name="$1" pidfile="$2" pid
    [ -f "$pidfile" ] || { echo "down.sh: no $name started by up.sh"; return 0; }
    pid="$(cat "$pidfile")"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "down.sh: $name (pid $pid) was not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -INT "$pid" 2>/dev/null
    if ! gone "$pid" 30; then
        echo "down.sh: $name (pid $pid) still running after SIGINT; sending SIGTERM" >&2
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        if ! gone "$pid" 15; then
            echo "down.sh: $name (pid $pid) still running; sending SIGKILL" >&2
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
            gone "$pid" 5
        fi
    fi
    rm -f "$pidfile"
    echo "down.sh: stopped $name (pid $pid)"
}

stop worker "$STATE/worker.pid"
stop server "$STATE/server.pid"
