#!/usr/bin/env bash
# Start, stop and inspect the real services the test suite and the benchmarks run against,
# on a machine without Docker:
#   - PostgreSQL from Debian's packages, on 127.0.0.1:$EVENTSTORE_PG_PORT (default 55432), and
#     a second, separate cluster on $EVENTSTORE_PG_RESTORE_PORT (default 55433) that the
#     backup-and-restore tests restore dumps into (a fresh cluster has its own transaction
#     counter, which is the point of those tests);
#   - Apache Kafka 4.x (KRaft, one combined broker+controller) from its jars, fetched by Maven
#     through scripts/kafka/pom.xml, on 127.0.0.1:$EVENTSTORE_KAFKA_PORT (default 59092).
# Everything (data, logs, jars) lives under .services/ in the project, which git ignores.
# Installs what is missing (apt-get, mvn), waits until both answer, and is safe to run twice.
#
#   scripts/services.sh start     start both (no-op for one already running)
#   scripts/services.sh stop      stop both
#   scripts/services.sh status    say what runs
#   scripts/services.sh env       print the export lines the tests read
#   scripts/services.sh reset     stop both and delete their data
#   scripts/services.sh stop-kafka | start-kafka   the broker alone (the outage tests use these)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/.services"
PG_PORT=${EVENTSTORE_PG_PORT:-55432}
PG_RESTORE_PORT=${EVENTSTORE_PG_RESTORE_PORT:-55433}
KAFKA_PORT=${EVENTSTORE_KAFKA_PORT:-59092}
CONTROLLER_PORT=${EVENTSTORE_KAFKA_CONTROLLER_PORT:-59093}
PG_HOME="$STATE/postgres"
KAFKA_HOME="$STATE/kafka"
KAFKA_LIBS="$KAFKA_HOME/libs"
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_LOGS="$KAFKA_HOME/logs"
KAFKA_PID="$KAFKA_HOME/kafka.pid"
DB_USER=eventstore
DB_NAME=eventstore

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "cannot install $* (no apt-get): install it by hand"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    log "installing $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
    log "$what is up"
}

# ---------------------------------------------------------------- PostgreSQL

# Where the cluster lives: .services/postgres, unless the server's user cannot reach it (a
# checkout inside a private directory, with us as root); then a folder in that user's home,
# named after this checkout so that two checkouts never share a cluster.
choose_pg_home() {
    mkdir -p "$STATE"
    if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 \
        && ! runuser -u postgres -- test -x "$STATE" 2>/dev/null; then
        local home; home=$(getent passwd postgres | cut -d: -f6)
        PG_HOME="$home/eventstore-$(printf '%s' "$ROOT" | md5sum | cut -c1-10)"
        ln -sfn "$PG_HOME" "$STATE/postgres"
    fi
    use_cluster main
}

# Which cluster the PostgreSQL functions below act on: `main` (the tests' and benchmarks'
# server) or `restore` (the second cluster, for the restore tests).
use_cluster() {
    if [ "$1" = main ]; then
        PG_DATA="$PG_HOME/data"; PG_RUN="$PG_HOME/run"; PG_LOG="$PG_HOME/postgres.log"
        CLUSTER_PORT=$PG_PORT
    else
        PG_DATA="$PG_HOME/restore-data"; PG_RUN="$PG_HOME/restore-run"
        PG_LOG="$PG_HOME/restore.log"; CLUSTER_PORT=$PG_RESTORE_PORT
    fi
}

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && echo "$dir"
}

# PostgreSQL refuses to run as root: when we are root, the server runs as the 'postgres'
# system user that Debian's package creates.
pg_user() { if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi; }

as_pg() {
    local user; user=$(pg_user)
    # From /, which the server's user can always enter (the checkout may be private).
    if [ "$user" = "$(id -un)" ]; then "$@"; else (cd / && runuser -u "$user" -- "$@"); fi
}

pg_running() { [ -n "$(pg_bindir)" ] && as_pg "$(pg_bindir)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_ready() { "$(pg_bindir)/pg_isready" -q -h 127.0.0.1 -p "$CLUSTER_PORT" -U "$DB_USER" -d postgres; }

start_postgres() {
    local bin; bin=$(pg_bindir) || die "PostgreSQL binaries not found after install"
    mkdir -p "$PG_DATA" "$PG_RUN"
    as_root chown -R "$(pg_user)" "$PG_HOME"
    chmod 700 "$PG_DATA"
    if [ ! -f "$PG_DATA/PG_VERSION" ]; then
        log "initdb in $PG_DATA"
        # Trust authentication on loopback only: this cluster is for tests and benchmarks.
        as_pg "$bin/initdb" -D "$PG_DATA" -U "$DB_USER" --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $CLUSTER_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 300
shared_buffers = 256MB
EOF
    fi
    if pg_running; then
        log "PostgreSQL already running"
    else
        port_open "$CLUSTER_PORT" && die "port $CLUSTER_PORT is taken by another process; set EVENTSTORE_PG_PORT or EVENTSTORE_PG_RESTORE_PORT"
        log "starting PostgreSQL on 127.0.0.1:$CLUSTER_PORT"
        as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
            || die "PostgreSQL did not start; see $PG_LOG"
    fi
    wait_for 60 PostgreSQL pg_ready || die "PostgreSQL does not answer; see $PG_LOG"
    if ! "$bin/psql" -h 127.0.0.1 -p "$CLUSTER_PORT" -U "$DB_USER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
        "$bin/createdb" -h 127.0.0.1 -p "$CLUSTER_PORT" -U "$DB_USER" "$DB_NAME"
    fi
}

stop_postgres() {
    if pg_running; then
        log "stopping PostgreSQL"
        as_pg "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
    fi
}

# ---------------------------------------------------------------- Kafka

kafka_java() { java -Xms256m -Xmx768m -cp "$KAFKA_LIBS/*" "$@"; }

fetch_kafka() {
    if [ -n "$(ls "$KAFKA_LIBS"/kafka_2.13-*.jar 2>/dev/null)" ]; then return; fi
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null || apt_install maven
    log "fetching the Kafka jars with Maven (scripts/kafka/pom.xml)"
    mkdir -p "$KAFKA_LIBS"
    mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" \
        || die "Maven could not fetch the Kafka jars"
}

write_kafka_config() {
    mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
    cat >"$KAFKA_HOME/server.properties" <<EOF
# Single-node KRaft cluster for tests and benchmarks, generated by scripts/services.sh.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
# Topics are created by the project, never by the broker (DESIGN section 5).
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
delete.topic.enable=true
EOF
}

kafka_running() { [ -f "$KAFKA_PID" ] && kill -0 "$(cat "$KAFKA_PID")" 2>/dev/null; }

start_kafka() {
    fetch_kafka
    if kafka_running; then
        log "Kafka already running"
    else
        port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; set EVENTSTORE_KAFKA_PORT"
        write_kafka_config
        if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
            log "formatting Kafka storage in $KAFKA_DATA"
            local cluster_id
            cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
            kafka_java -Dkafka.logs.dir="$KAFKA_LOGS" \
                -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
                kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_HOME/server.properties" \
                >"$KAFKA_LOGS/format.log" 2>&1 || die "formatting Kafka storage failed; see $KAFKA_LOGS/format.log"
        fi
        # A fresh log, so that readiness (a line in it) is this run's and not the last one's.
        [ -f "$KAFKA_LOGS/server.log" ] && mv "$KAFKA_LOGS/server.log" "$KAFKA_LOGS/server.log.1"
        log "starting Kafka on 127.0.0.1:$KAFKA_PORT"
        nohup java -Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true \
            -Dkafka.logs.dir="$KAFKA_LOGS" \
            -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
            -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_HOME/server.properties" \
            >"$KAFKA_LOGS/console.log" 2>&1 &
        echo $! >"$KAFKA_PID"
    fi
    wait_for 90 Kafka kafka_answers || die "Kafka does not answer; see $KAFKA_LOGS/server.log"
}

# The port opens before the broker has finished registering with its controller; the broker
# logs this line once it is ready to serve requests.
kafka_answers() {
    kafka_running || die "Kafka exited; see $KAFKA_LOGS/console.log and $KAFKA_LOGS/server.log"
    port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$KAFKA_LOGS/server.log" 2>/dev/null
}

stop_kafka() {
    if kafka_running; then
        local pid; pid=$(cat "$KAFKA_PID")
        log "stopping Kafka (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$KAFKA_PID"
}

# ---------------------------------------------------------------- commands

print_env() {
    echo "export EVENTSTORE_TEST_DATABASE_URL=postgresql://$DB_USER@127.0.0.1:$PG_PORT/$DB_NAME"
    echo "export EVENTSTORE_TEST_RESTORE_DATABASE_URL=postgresql://$DB_USER@127.0.0.1:$PG_RESTORE_PORT/$DB_NAME"
    echo "export EVENTSTORE_TEST_PG_BINDIR=$(pg_bindir)"
    echo "export EVENTSTORE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
    echo "export EVENTSTORE_TEST_KAFKA_CONTROL=$ROOT/scripts/services.sh"
}

case "${1:-}" in
    start)
        [ -n "$(pg_bindir)" ] || apt_install postgresql
        # kcat: an independent Kafka client, which the tests use to read what we publish.
        command -v kcat >/dev/null || apt_install kcat
        choose_pg_home
        start_postgres
        use_cluster restore; start_postgres; use_cluster main
        start_kafka
        print_env
        ;;
    stop-kafka) stop_kafka ;;
    start-kafka) start_kafka ;;
    stop)
        choose_pg_home; stop_kafka; stop_postgres
        use_cluster restore; stop_postgres
        ;;
    status)
        choose_pg_home
        if pg_running; then echo "postgres: running on 127.0.0.1:$PG_PORT"; else echo "postgres: stopped"; fi
        use_cluster restore
        if pg_running; then echo "postgres (restore target): running on 127.0.0.1:$PG_RESTORE_PORT"; else echo "postgres (restore target): stopped"; fi
        if kafka_running; then echo "kafka: running on 127.0.0.1:$KAFKA_PORT"; else echo "kafka: stopped"; fi
        ;;
    env) print_env ;;
    reset)
        choose_pg_home
        stop_kafka; stop_postgres
        use_cluster restore; stop_postgres
        as_root rm -rf "$PG_HOME" "$STATE/postgres" "$KAFKA_DATA" "$KAFKA_LOGS"
        log "data removed (jars kept in $KAFKA_LIBS)"
        ;;
    *) echo "usage: $0 start|stop|status|env|reset" >&2; exit 2 ;;
esac
