#!/usr/bin/env bash
# conformance/tools/plots/collect.sh: runs the benchmarks behind the plots of
# docs/benchmarks.md ("Plots") and writes their data, docs/plots/*.json;
# `cargo run -p rtm-plots` then draws docs/plots/*.svg from those files.
#
#   RTM_BENCH_DIR=/path/to/bench conformance/tools/plots/collect.sh    # the workshop (shared/bench)
#   PLOTS="cluster inproc" RUNS=3 conformance/tools/plots/collect.sh   # no workshop needed
#
# Plots (PLOTS, default "idle cluster inproc"):
#   idle     idle memory per connection, rtm-fixture --runtime tokio vs the
#            workshop's hand-written tungstenite-rtm, through the workshop's
#            run.sh (`idle` workload), IDLE_SIZES connections. Needs
#            RTM_BENCH_DIR (the benchmark workshop, outside this repository;
#            it is copied to RTM_BENCH_WORK and built there). Skipped without it.
#   cluster  rtm-cluster-bench p50/p99 latency at each of CLUSTER_RATES
#            publishes/s (and the closed loop, --rate 0, for the capacity),
#            through a private redis-server on REDIS_PORT.
#   inproc   rtm-inproc calls and emit with INPROC_THREADS worker threads.
#
# Before each cluster and inproc run the script waits (at most QUIET_WAIT s)
# until the machine's CPUs are QUIET_IDLE % idle, and records the idle % it
# saw (idle_before_pct) and the CPU that other processes used during the run
# (foreign_cpu_pct, % of one core): on a shared machine the figures depend on
# them. The idle plot is memory, which hardly moves with the machine's load.
#
# Needs: bash, python3 (aggregate.py beside this script), redis-server and
# redis-cli (cluster), taskset (the workshop's run.sh), cargo.
#
# Every point is run RUNS times, interleaved (repetition outermost; within one,
# every size/rate/thread count and, for idle, both servers in turn); the JSON
# keeps every run and its median. Every command runs under `timeout`, the
# whole script stops starting runs after DEADLINE_S seconds (what is missing
# is then missing from the JSON, and said on stderr), and every process it
# starts is stopped by its PID.
#
# The binaries: BIN=dir (already built), else built here with cargo (release;
# CARGO_TARGET_DIR is honoured). FROM_HEAD=1 builds a `git archive` export of
# HEAD instead of the work tree (a checkout that someone else is editing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
cd "$repo"

PLOTS=${PLOTS:-"idle cluster inproc"}
RUNS=${RUNS:-3}
OUT=${OUT:-$repo/docs/plots}
DEADLINE_S=${DEADLINE_S:-3600}
IDLE_SIZES=${IDLE_SIZES:-"1000 3000 10000 19500"}
IDLE_HOLD=${IDLE_HOLD:-5}
IDLE_SETTLE=${IDLE_SETTLE:-2}
CLUSTER_USERS=${CLUSTER_USERS:-100}
CLUSTER_SECONDS=${CLUSTER_SECONDS:-5}
CLUSTER_RATES=${CLUSTER_RATES:-"10000 25000 50000 75000 100000 150000 200000 300000"}
REDIS_PORT=${REDIS_PORT:-16395}
INPROC_THREADS=${INPROC_THREADS:-"1 2 3 4"}
INPROC_SECONDS=${INPROC_SECONDS:-3}
QUIET_IDLE=${QUIET_IDLE:-70}
QUIET_WAIT=${QUIET_WAIT:-20}
RTM_BENCH_DIR=${RTM_BENCH_DIR:-}
RTM_BENCH_WORK=${RTM_BENCH_WORK:-${TMPDIR:-/tmp}/rtm-plots-bench}

scratch=$(mktemp -d -t rtm-plots.XXXXXX)
log=$scratch/collect.log
redis_pidfile=$scratch/redis.pid
redis_started=""
cleanup() {
    if [[ -n "$redis_started" && -s "$redis_pidfile" ]]; then
        local pid
        pid=$(cat "$redis_pidfile")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    echo "collect: logs in $log" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "collect: $*" >&2; }
time_left() { ((SECONDS < DEADLINE_S)); }
cpu_idle_pct() { # machine-wide idle % of the CPUs over one second
    local a b
    read -r -a a </proc/stat
    sleep 1
    read -r -a b </proc/stat
    local idle=$((b[4] + b[5] - a[4] - a[5])) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $((total > 0 ? 100 * idle / total : 0))
}
quiet_wait() { # waits (<= QUIET_WAIT s) for QUIET_IDLE % idle; prints the last idle %
    local start=$SECONDS pct
    while :; do
        pct=$(cpu_idle_pct)
        if ((pct >= QUIET_IDLE || SECONDS - start >= QUIET_WAIT)); then
            echo "$pct"
            return
        fi
    done
}
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- the binaries and the commit they are built from ---------------------------
src_paths=(rtm-core rtm-broker rtm-runtime rtm-driver rtm-tokio rtm-async-std rtm-redis conformance/src conformance/Cargo.toml)
commit=$(git rev-parse --short HEAD)
if [[ -n "${BIN:-}" ]]; then
    say "binaries from $BIN (commit recorded as ${COMMIT:-$commit})"
    commit=${COMMIT:-$commit}
elif [[ "${FROM_HEAD:-0}" == 1 ]]; then
    src=$scratch/src
    mkdir -p "$src"
    git archive HEAD | tar -x -C "$src"
    say "building HEAD ($commit) in $src"
    (cd "$src" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target} timeout 1800 cargo build --release -p conformance --bins) >>"$log" 2>&1
    BIN=${CARGO_TARGET_DIR:-$repo/target}/release
else
    if ! git diff --quiet HEAD -- "${src_paths[@]}"; then
        commit="$commit+dirty"
    fi
    say "building the work tree ($commit)"
    timeout 1800 cargo build --release -p conformance --bins >>"$log" 2>&1
    BIN=${CARGO_TARGET_DIR:-$repo/target}/release
fi
for b in rtm-fixture rtm-cluster-bench rtm-inproc; do
    [[ -x "$BIN/$b" ]] || {
        say "missing $BIN/$b"
        exit 1
    }
done

machine="$(nproc) vCPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Linux $(uname -r)"
mkdir -p "$OUT"
aggregate() { # kind raw.jsonl out.json
    python3 "$here/aggregate.py" build "$1" "$2" "$3" --date "$(date +%F)" --commit "$commit" --machine "$machine" \
        --runs "$RUNS" --deadline-hit "$(time_left && echo 0 || echo 1)"
}

# ---- idle memory (the workshop's idle workload) --------------------------------
collect_idle() {
    if [[ -z "$RTM_BENCH_DIR" ]]; then
        say "idle: skipped (set RTM_BENCH_DIR to the benchmark workshop)"
        return 0
    fi
    local bw=$RTM_BENCH_WORK raw=$scratch/idle.jsonl
    mkdir -p "$bw"
    (cd "$RTM_BENCH_DIR" && tar --exclude=./target --exclude=./results --exclude='*/node_modules' -cf - .) |
        (cd "$bw" && tar -xf - --no-same-permissions && chmod -R u+w .)
    say "idle: building the workshop's loadgen and tungstenite-rtm in $bw"
    (cd "$bw" && timeout 1800 cargo build --release -p loadgen -p tungstenite-rtm-peer) >>"$log" 2>&1
    local rep n
    for rep in $(seq 1 "$RUNS"); do
        for n in $IDLE_SIZES; do
            time_left || {
                say "idle: deadline reached before run $rep at $n connections"
                break 2
            }
            say "idle: run $rep, $n connections"
            RESULTS=$raw RUN_ID="plots-idle-$n-r$rep" LOGDIR="$scratch/bench-logs" SKIP_BUILD=1 \
                WORKLOADS=idle IDLE_CONNS=$n IDLE_HOLD=$IDLE_HOLD IDLE_SETTLE=$IDLE_SETTLE \
                SERVERS=tungstenite-rtm EXTRA_SERVER_NAME=project EXTRA_SERVER_MODE=rtm \
                EXTRA_SERVER_CMD="$BIN/rtm-fixture --runtime tokio --listen 127.0.0.1:{port}" \
                timeout -k 10 900 "$bw/run.sh" full >>"$log" 2>&1 || say "idle: run.sh exited $? (see $log)"
        done
    done
    IDLE_CMD="RTM_BENCH_DIR=<the workshop> conformance/tools/plots/collect.sh (its run.sh full, WORKLOADS=idle IDLE_CONNS=N IDLE_HOLD=$IDLE_HOLD IDLE_SETTLE=$IDLE_SETTLE SERVERS=tungstenite-rtm, EXTRA_SERVER_CMD=\"target/release/rtm-fixture --runtime tokio --listen 127.0.0.1:{port}\")" \
        aggregate idle "$raw" "$OUT/idle-memory.json"
}

# ---- cross-server latency against the offered rate -----------------------------
busy_jiffies() { # CPU time used machine-wide so far (user, nice, system, irq, softirq, steal)
    local a
    read -r -a a </proc/stat
    echo $((a[1] + a[2] + a[3] + a[6] + a[7] + a[8]))
}
pid_jiffies() { # utime + stime of a process (0 if gone); fields counted after "(comm) "
    awk '{ sub(/^.*\) /, ""); split($0, f, " "); print f[12] + f[13] }' "/proc/$1/stat" 2>/dev/null || echo 0
}
# measured CMD...: runs CMD, its stdout into $scratch/measured.out (stderr to the
# log); sets FOREIGN_PCT: the CPU that processes other than CMD (and our
# redis-server) used meanwhile, in % of one core (200 = both cores taken).
measured() {
    local hz b0 b1 r0=0 r1=0 t0 t1 rc=0 cpu redis_pid=""
    hz=$(getconf CLK_TCK)
    [[ -n "$redis_started" && -s "$redis_pidfile" ]] && redis_pid=$(cat "$redis_pidfile")
    [[ -n "$redis_pid" ]] && r0=$(pid_jiffies "$redis_pid")
    b0=$(busy_jiffies)
    t0=$(date +%s%N)
    local TIMEFORMAT='%U %S'
    { time "$@" >"$scratch/measured.out" 2>>"$log"; } 2>"$scratch/measured.time" || rc=$?
    t1=$(date +%s%N)
    b1=$(busy_jiffies)
    [[ -n "$redis_pid" ]] && r1=$(pid_jiffies "$redis_pid")
    cpu=$(awk '{print $1 + $2}' "$scratch/measured.time" 2>/dev/null || echo 0)
    FOREIGN_PCT=$(awk -v b=$((b1 - b0)) -v r=$((r1 - r0)) -v hz="$hz" -v c="$cpu" -v w=$((t1 - t0)) \
        'BEGIN { f = ((b - r) / hz - c) / (w / 1e9) * 100; if (f < 0) f = 0; printf "%.0f", f }')
    return $rc
}

collect_cluster() {
    local raw=$scratch/cluster.jsonl rep rate q
    if port_in_use "$REDIS_PORT"; then
        say "cluster: port $REDIS_PORT is taken; set REDIS_PORT"
        return 1
    fi
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize yes --pidfile "$redis_pidfile" --logfile "$scratch/redis.log"
    redis_started=1
    for _ in $(seq 1 100); do
        [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]] && break
        sleep 0.1
    done
    for rep in $(seq 1 "$RUNS"); do
        for rate in 0 $CLUSTER_RATES; do
            time_left || {
                say "cluster: deadline reached before run $rep at rate $rate"
                break 2
            }
            q=$(quiet_wait)
            measured timeout -k 5 $((CLUSTER_SECONDS + 90)) "$BIN/rtm-cluster-bench" --redis "redis://127.0.0.1:$REDIS_PORT" \
                --users "$CLUSTER_USERS" --seconds "$CLUSTER_SECONDS" --rate "$rate" || say "cluster: exited $?"
            say "cluster: run $rep, rate $rate (CPUs $q % idle before; other processes used $FOREIGN_PCT % of a core during it)"
            cat "$scratch/measured.out" >>"$log"
            python3 "$here/aggregate.py" parse-cluster "$rate" "$rep" <"$scratch/measured.out" |
                python3 "$here/aggregate.py" tag idle_before_pct "$q" foreign_cpu_pct "$FOREIGN_PCT" >>"$raw" ||
                say "cluster: no figures at rate $rate"
        done
    done
    CLUSTER_CMD="target/release/rtm-cluster-bench --redis redis://127.0.0.1:$REDIS_PORT --users $CLUSTER_USERS --seconds $CLUSTER_SECONDS --rate R" \
        aggregate cluster "$raw" "$OUT/cluster-latency.json"
}

# ---- in-process scaling with worker threads -------------------------------------
collect_inproc() {
    local raw=$scratch/inproc.jsonl rep t w line q args
    for rep in $(seq 1 "$RUNS"); do
        for t in $INPROC_THREADS; do
            for w in calls emit; do
                time_left || {
                    say "inproc: deadline reached before run $rep ($w, $t threads)"
                    break 3
                }
                q=$(quiet_wait)
                if [[ $w == calls ]]; then
                    args=(calls --threads "$t" --connections 64 --in-flight 8 --seconds "$INPROC_SECONDS")
                else
                    args=(emit --threads "$t" --connections 2000 --emitters 2 --seconds "$INPROC_SECONDS")
                fi
                measured timeout -k 5 $((INPROC_SECONDS + 60)) "$BIN/rtm-inproc" "${args[@]}" || say "inproc: exited $?"
                say "inproc: run $rep, $w, $t threads (CPUs $q % idle before; other processes used $FOREIGN_PCT % of a core during it)"
                line=$(grep '^{' "$scratch/measured.out" | tail -n 1 || true)
                if [[ -n "$line" ]]; then
                    python3 "$here/aggregate.py" tag idle_before_pct "$q" foreign_cpu_pct "$FOREIGN_PCT" <<<"$line" >>"$raw"
                else
                    say "inproc: no result ($w, $t threads)"
                fi
            done
        done
    done
    INPROC_CMD="target/release/rtm-inproc calls --threads T --connections 64 --in-flight 8 --seconds $INPROC_SECONDS; target/release/rtm-inproc emit --threads T --connections 2000 --emitters 2 --seconds $INPROC_SECONDS" \
        aggregate inproc "$raw" "$OUT/inproc-scaling.json"
}

for p in $PLOTS; do
    case $p in
    idle) collect_idle ;;
    cluster) collect_cluster ;;
    inproc) collect_inproc ;;
    *)
        say "unknown plot $p (idle, cluster, inproc)"
        exit 2
        ;;
    esac
done
say "done in ${SECONDS} s; now: cargo run -p rtm-plots"
