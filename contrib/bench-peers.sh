#!/usr/bin/env bash
# Installs and starts the IRC servers that im-bench compares against: ngIRCd and InspIRCd from
# Debian's packages, on loopback, plaintext and TLS, with their per-address and flood limits
# lifted (configs in contrib/bench/). Run as root (apt-get; InspIRCd with --runasroot).
#
#   contrib/bench-peers.sh [start]    install if needed, make a self-signed cert, (re)start both
#   contrib/bench-peers.sh stop       stop both
#   contrib/bench-peers.sh status     show what runs where
#
# Ports (127.0.0.1): ngIRCd 16667 (plain) and 16697 (TLS); InspIRCd 26667 and 26697.
# Everything (configs as used, cert, logs, pid files) lives in $BENCH_PEERS_DIR, by default
# /tmp/im-bench-peers; im-bench reads the pid files there (--peers-dir) to measure RSS.
#
# Both servers take the hard open-files limit as their soft limit, so they can hold as many
# connections as the machine allows a process (ulimit -Hn).

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${BENCH_PEERS_DIR:-/tmp/im-bench-peers}"
cmd="${1:-start}"

log() { printf 'bench-peers: %s\n' "$*" >&2; }

install_packages() {
    local missing=()
    command -v ngircd >/dev/null || missing+=(ngircd)
    command -v inspircd >/dev/null || missing+=(inspircd)
    command -v openssl >/dev/null || missing+=(openssl)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian's packages may start their own instances on the default ports: stop those.
    if command -v service >/dev/null; then
        service ngircd stop >/dev/null 2>&1 || true
        service inspircd stop >/dev/null 2>&1 || true
    fi
}

stop_one() {
    local name="$1" pidfile="$dir/$1.pid"
    if [[ -f "$pidfile" ]]; then
        local pid
        pid="$(cat "$pidfile")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
            log "stopped $name (pid $pid)"
        fi
        rm -f "$pidfile"
    fi
}

wait_port() {
    local port="$1" name="$2"
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "$name is not listening on port $port; see $dir/$name.log"
    return 1
}

start() {
    install_packages
    mkdir -p "$dir"
    stop_one ngircd
    stop_one inspircd
    if [[ ! -s "$dir/cert.pem" || ! -s "$dir/key.pem" ]]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
            -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
            -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
        log "made a self-signed certificate in $dir"
    fi
    echo "im-bench peer" >"$dir/motd.txt"
    sed "s|@DIR@|$dir|g" "$here/bench/ngircd.conf" >"$dir/ngircd.conf"
    sed "s|@DIR@|$dir|g" "$here/bench/inspircd.conf" >"$dir/inspircd.conf"
    ngircd --configtest --config "$dir/ngircd.conf" >"$dir/ngircd.configtest" 2>&1 ||
        { cat "$dir/ngircd.configtest" >&2; exit 1; }

    ulimit -n "$(ulimit -Hn)"
    # In the foreground (--nodaemon, --nofork) so that $! is the server's own pid; nohup and &
    # detach them from this shell.
    nohup ngircd --nodaemon --config "$dir/ngircd.conf" >"$dir/ngircd.log" 2>&1 &
    echo $! >"$dir/ngircd.pid"
    nohup inspircd --nofork --runasroot --config="$dir/inspircd.conf" >"$dir/inspircd.out" 2>&1 &
    echo $! >"$dir/inspircd.pid"
    wait_port 16667 ngircd
    wait_port 16697 ngircd
    wait_port 26667 inspircd
    wait_port 26697 inspircd
    status
}

status() {
    for name in ngircd inspircd; do
        local pid="-"
        [[ -f "$dir/$name.pid" ]] && pid="$(cat "$dir/$name.pid")"
        local rss="-"
        if [[ "$pid" != "-" ]] && [[ -r "/proc/$pid/status" ]]; then
            rss="$(awk '/VmRSS/ {print $2 " kB"}' "/proc/$pid/status")"
        fi
        printf '%-9s pid %-8s rss %-10s version %s\n' "$name" "$pid" "$rss" \
            "$(dpkg-query -W -f='${Version}' "$name" 2>/dev/null || echo '?')"
    done
    echo "ngircd   127.0.0.1:16667 (plain)  127.0.0.1:16697 (TLS)"
    echo "inspircd 127.0.0.1:26667 (plain)  127.0.0.1:26697 (TLS)"
    echo "dir      $dir"
}

case "$cmd" in
start) start ;;
stop)
    stop_one ngircd
    stop_one inspircd
    ;;
status) status ;;
*)
    echo "usage: $0 [start|stop|status]" >&2
    exit 2
    ;;
esac
