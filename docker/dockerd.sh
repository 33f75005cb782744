#!/bin/sh
# Start a Docker daemon when none answers, and stop only the one this script started.
#   docker/dockerd.sh start   # exit 0 once `docker info` answers
#   docker/dockerd.sh stop    # stops the daemon `start` launched, if it launched one
#   docker/dockerd.sh run COMMAND...   # COMMAND with a daemon; one started for it is stopped after
# For hosts without systemd (CI containers, this development machine): Debian's docker.io
# installs dockerd but nothing starts it there. Needs root, as dockerd does.
set -eu
PIDFILE=${CUTOUT_DOCKERD_PIDFILE:-/tmp/cutout-dockerd.pid}
LOG=${CUTOUT_DOCKERD_LOG:-/tmp/cutout-dockerd.log}

case "${1:-}" in
start)
    if docker info >/dev/null 2>&1; then
        echo "dockerd: already answering; leaving it alone"
        exit 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd: not installed (apt-get install docker.io iptables)" >&2; exit 1; }
    # Its own pid file, so that `stop` never touches a daemon someone else started.
    nohup dockerd --pidfile /var/run/docker.pid >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && { echo "dockerd: started (pid $(cat "$PIDFILE"), log $LOG)"; exit 0; }
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break
        sleep 1
    done
    echo "dockerd: did not come up; the end of $LOG:" >&2
    tail -20 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
    ;;
run)
    shift
    if docker info >/dev/null 2>&1; then
        exec "$@"
    fi
    "$0" start
    # However COMMAND ends; its exit status is the script's.
    trap '"$0" stop' EXIT
    trap 'exit 130' INT TERM
    "$@"
    ;;
stop)
    [ -f "$PIDFILE" ] || { echo "dockerd: not started by this script; leaving it alone"; exit 0; }
    pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    # dockerd stops its containers first (up to their stop timeouts) and then containerd.
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    rm -f "$PIDFILE"
    echo "dockerd: stopped (pid $pid)"
    ;;
*)
    echo "usage: $0 start|stop|run COMMAND..." >&2
    exit 2
    ;;
esac
