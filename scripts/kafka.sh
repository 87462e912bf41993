#!/usr/bin/env bash
# kafka.sh — run a real single-node Apache Kafka broker (KRaft, combined
# broker+controller) on 127.0.0.1 for kpipe's integration tests and local work.
#
# No Docker and no Kafka tarball: the broker's jars come from Maven Central via
# scripts/kafka/pom.xml (mvn dependency:copy-dependencies) and are cached.
#
# Usage:
#   scripts/kafka.sh up         fetch if needed, format once, start, wait until
#                               ready; prints "127.0.0.1:PORT" on stdout
#   scripts/kafka.sh down       stop the broker of KAFKA_PORT (KAFKA_WIPE=1 also
#                               deletes its state dir)
#   scripts/kafka.sh status     prints "running" (exit 0) or "stopped" (exit 1)
#   scripts/kafka.sh fetch      only download the jars (warm the cache)
#   scripts/kafka.sh security   for a broker started with KAFKA_SECURE=1, prints
#                               KEY=VALUE lines: the secure listeners, the CA,
#                               the client certificate and key, the SASL users
#                               and their password files
#   scripts/kafka.sh classpath [tools|broker]
#                               fetch if needed, print a java -cp value: "tools"
#                               (default) for the admin CLIs, "broker" for kafka.Kafka
#   scripts/kafka.sh tool NAME [ARGS...]
#                               run an admin CLI, NAME = class relative to
#                               org.apache.kafka.tools or fully qualified, e.g.
#                               tool TopicCommand --bootstrap-server 127.0.0.1:9092 --list
#                               tool consumer.group.ConsumerGroupCommand ... --describe
#
# Environment:
#   KAFKA_PORT             PLAINTEXT port (default 9092)
#   KAFKA_CONTROLLER_PORT  controller port (default KAFKA_PORT+1)
#   KAFKA_ADVERTISED_ADDR  host:port the PLAINTEXT listener advertises to
#                          clients (default 127.0.0.1:KAFKA_PORT): another
#                          address, such as a TCP proxy's in front of the
#                          broker, makes clients reach it only through that
#   KAFKA_SECURE=1         also open the secure listeners beside PLAINTEXT (on the
#                          first "up" of a state dir: they need a fresh one):
#                          SASL_SSL on KAFKA_SASL_SSL_PORT (default KAFKA_PORT+2)
#                          with PLAIN, SCRAM-SHA-512 and OAUTHBEARER (unsecured
#                          JWTs, tests only), mutual TLS on KAFKA_MTLS_PORT
#                          (default KAFKA_PORT+3), both advertised as localhost,
#                          the name in the broker's certificate, and
#                          SASL_PLAINTEXT on KAFKA_SASL_PLAINTEXT_PORT (default
#                          KAFKA_PORT+4) with SCRAM-SHA-256 and PLAIN. The CA, certificates
#                          and passwords are made with openssl in STATE/security;
#                          "security" prints where they are
#   KPIPE_CACHE            cache folder (default <repo>/.cache)
#   KAFKA_STATE_DIR        state dir (default $KPIPE_CACHE/kafka-run-$KAFKA_PORT)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker (default 90)
#   KAFKA_HEAP_OPTS        JVM heap (default "-Xmx512m -Xms256m")
#   KAFKA_OPTS             extra JVM options
#   KAFKA_EXTRA_PROPS      extra server.properties lines (newline separated)
#   KAFKA_WIPE=1           with "down": delete the state dir too
#   JAVA_HOME / MVN        java and mvn to use (default: from PATH); MAVEN_OPTS
#                          and ~/.m2/settings.xml are honoured by mvn as usual
#
# All messages go to stderr, prefixed "kafka.sh:"; stdout carries only results.
set -euo pipefail

readonly KAFKA_VERSION=4.4.0 # keep in sync with kafka.version in kafka/pom.xml

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
POM="$SCRIPT_DIR/kafka/pom.xml"
CACHE=${KPIPE_CACHE:-$REPO/.cache}
KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"             # broker classpath (kafka.Kafka, StorageTool)
TOOLS_LIBS="$KAFKA_HOME/tools-libs" # admin CLIs (org.apache.kafka.tools.*), see pom.xml
FETCH_MARKER="$KAFKA_HOME/.fetched"

PORT=${KAFKA_PORT:-9092}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}

ensure_cache() {
	mkdir -p "$CACHE"
	# Keep git from seeing the cache (jars, broker state) without touching the
	# repo's own .gitignore.
	[[ -e $CACHE/.gitignore ]] || printf '# Created by scripts/kafka.sh\n*\n' >"$CACHE/.gitignore"
}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_port_number() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

is_port_number "$PORT" || die "KAFKA_PORT must be a TCP port number, got '$PORT'"
PORT=$((10#$PORT))
CPORT=${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
is_port_number "$CPORT" || die "KAFKA_CONTROLLER_PORT must be a TCP port number, got '$CPORT'"
CPORT=$((10#$CPORT))
((PORT != CPORT)) || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ (both $PORT)"
[[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "KAFKA_START_TIMEOUT must be a number of seconds, got '$START_TIMEOUT'"

STATE=${KAFKA_STATE_DIR:-$CACHE/kafka-run-$PORT}
DATA="$STATE/data"
LOGDIR="$STATE/logs"
PIDFILE="$STATE/kafka.pid"
OUTFILE="$STATE/kafka.out"
SERVER_LOG="$LOGDIR/server.log"
PROPS="$STATE/server.properties"
LOG4J="$STATE/log4j2.xml"
TOOLS_LOG4J="$STATE/log4j2-tools.xml"
BOOTSTRAP="127.0.0.1:$PORT"
ADVERTISED=${KAFKA_ADVERTISED_ADDR:-$BOOTSTRAP}
[[ $ADVERTISED =~ ^[^:/[:space:]]+:[0-9]+$ ]] || die "KAFKA_ADVERTISED_ADDR must be host:port, got '$ADVERTISED'"
SECURE=${KAFKA_SECURE:-0}
[[ $SECURE == 0 || $SECURE == 1 ]] || die "KAFKA_SECURE must be 0 or 1, got '$SECURE'"
SPORT=${KAFKA_SASL_SSL_PORT:-$((PORT + 2))}
MPORT=${KAFKA_MTLS_PORT:-$((PORT + 3))}
PPORT=${KAFKA_SASL_PLAINTEXT_PORT:-$((PORT + 4))}
if ((SECURE)); then
	is_port_number "$SPORT" || die "KAFKA_SASL_SSL_PORT must be a TCP port number, got '$SPORT'"
	is_port_number "$MPORT" || die "KAFKA_MTLS_PORT must be a TCP port number, got '$MPORT'"
	is_port_number "$PPORT" || die "KAFKA_SASL_PLAINTEXT_PORT must be a TCP port number, got '$PPORT'"
fi
SEC="$STATE/security"
SCRAM_USER=kpipe_scram
PLAIN_USER=kpipe_plain

# ---------------------------------------------------------------- tools

find_java() {
	local j
	if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
		j="$JAVA_HOME/bin/java"
	elif j=$(command -v java 2>/dev/null); then
		:
	else
		die "java not found (Kafka $KAFKA_VERSION needs Java 17+): install it with 'apt-get update && apt-get install -y openjdk-17-jre-headless', or set JAVA_HOME"
	fi
	local ver major
	ver=$("$j" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)
	major=${ver%%.*}
	[[ $major == 1 ]] && major=$(cut -d. -f2 <<<"$ver")
	if [[ ! $major =~ ^[0-9]+$ ]] || ((major < 17)); then
		die "$j is Java '${ver:-unknown}', Kafka $KAFKA_VERSION needs Java 17+: 'apt-get install -y openjdk-17-jre-headless', or set JAVA_HOME"
	fi
	JAVA=$j
}

find_mvn() {
	MVN_BIN=${MVN:-mvn}
	command -v "$MVN_BIN" >/dev/null 2>&1 ||
		die "$MVN_BIN (Maven) not found; it is needed once to download Kafka's jars: install it with 'apt-get update && apt-get install -y maven' (or set MVN)"
}

pom_digest() { sha256sum "$POM" | cut -d' ' -f1; }

libs_ready() {
	[[ -f $FETCH_MARKER && -f $LIBS/kafka_2.13-$KAFKA_VERSION.jar ]] &&
		compgen -G "$TOOLS_LIBS/kafka-tools-[0-9]*.jar" >/dev/null &&
		[[ $(cat "$FETCH_MARKER") == "$(pom_digest)" ]]
}

# mvn_copy PROFILE DEST SENTINEL_GLOB: copy one profile's runtime classpath to DEST.
mvn_copy() {
	local profile=$1 dest=$2 sentinel=$3 tmp="$2.tmp.$$"
	rm -rf "$tmp"
	# The sed drops the stray colour codes Debian's mvn prints even with -B.
	if ! "$MVN_BIN" -B -q -f "$POM" -P "$profile" \
		dependency:copy-dependencies \
		-DincludeScope=runtime \
		-DoutputDirectory="$tmp" \
		-Dmdep.overWriteReleases=true 2>&1 | sed $'s/\x1b\\[[0-9;]*m//g' >&2; then
		rm -rf "$tmp"
		die "Maven could not fetch Kafka's jars (profile $profile; see output above; is Maven Central reachable? MAVEN_OPTS and settings.xml proxies are honoured)"
	fi
	if ! compgen -G "$tmp/$sentinel" >/dev/null; then
		rm -rf "$tmp"
		die "Maven finished but $sentinel is missing from the fetched jars (profile $profile)"
	fi
	rm -rf "$dest"
	mv "$tmp" "$dest"
}

cmd_fetch() {
	[[ -f $POM ]] || die "missing $POM"
	libs_ready && return 0
	find_java # mvn needs it too, and a clear message beats Maven's
	find_mvn
	ensure_cache
	mkdir -p "$KAFKA_HOME"
	# Serialise concurrent fetches (e.g. two ports brought up in parallel).
	local lockfd
	exec {lockfd}>"$KAFKA_HOME/.fetch.lock"
	flock -w 900 "$lockfd" || die "timed out waiting for another fetch ($KAFKA_HOME/.fetch.lock)"
	if libs_ready; then
		exec {lockfd}>&-
		return 0
	fi
	local t0=$SECONDS
	rm -f "$FETCH_MARKER"
	log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_HOME (one-time) ..."
	mvn_copy broker "$LIBS" "kafka_2.13-$KAFKA_VERSION.jar"
	mvn_copy tools "$TOOLS_LIBS" "kafka-tools-[0-9]*.jar"
	pom_digest >"$FETCH_MARKER"
	log "fetched $(find "$LIBS" "$TOOLS_LIBS" -name '*.jar' | wc -l) jars ($(du -sh "$KAFKA_HOME" | cut -f1)) in $((SECONDS - t0))s"
	exec {lockfd}>&-
}

# ---------------------------------------------------------------- state

pid_of_broker() {
	# Prints the pid of this port's broker if the pid file names a live kafka.Kafka
	# process (guards against pid reuse); returns 1 otherwise.
	[[ -f $PIDFILE ]] || return 1
	local pid
	pid=$(tr -dc '0-9' <"$PIDFILE")
	[[ -n $pid ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	if [[ -r /proc/$pid/cmdline ]]; then
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
	fi
	echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' <<<"$1"; }

write_configs() {
	mkdir -p "$DATA" "$LOGDIR"
	cat >"$PROPS" <<EOF
# Written by scripts/kafka.sh on every "up"; edits are overwritten
# (use KAFKA_EXTRA_PROPS for extra settings).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT$( ((SECURE)) && echo ",SASL_SSL://127.0.0.1:$SPORT,MTLS://127.0.0.1:$MPORT,SASL_PLAINTEXT://127.0.0.1:$PPORT")
advertised.listeners=PLAINTEXT://$ADVERTISED$( ((SECURE)) && echo ",SASL_SSL://localhost:$SPORT,MTLS://localhost:$MPORT,SASL_PLAINTEXT://127.0.0.1:$PPORT")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT$( ((SECURE)) && echo ",SASL_SSL:SASL_SSL,MTLS:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT")
log.dirs=$DATA
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
	if ((SECURE)); then
		chmod 600 "$PROPS" # it holds the PLAIN user's password
		secure_props >>"$PROPS"
	fi
	if [[ -n ${KAFKA_EXTRA_PROPS:-} ]]; then
		printf '# KAFKA_EXTRA_PROPS\n%s\n' "$KAFKA_EXTRA_PROPS" >>"$PROPS"
	fi

	local logdir_xml
	logdir_xml=$(xml_escape "$LOGDIR")
	cat >"$LOG4J" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.sh: broker logs, INFO, to $LOGDIR/server.log. -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName="$logdir_xml/server.log"
                 filePattern="$logdir_xml/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="64 MB"/></Policies>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
  </Loggers>
</Configuration>
EOF
	tools_log4j_config >"$TOOLS_LOG4J"
}

tools_log4j_config() {
	cat <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/kafka.sh: CLI tools log WARN+ to stderr. -->
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="stderr"/></Root>
  </Loggers>
</Configuration>
EOF
}

# ---------------------------------------------------------------- security

# make_security writes, once per state dir, a CA, the broker's certificate
# (for the name localhost), a client certificate for mutual TLS, and the
# SASL users' passwords (random).
make_security() {
	[[ -f $SEC/.done ]] && return 0
	[[ -f $DATA/meta.properties ]] &&
		die "KAFKA_SECURE=1 needs a fresh state dir (its SCRAM users are made when it is formatted): run 'KAFKA_WIPE=1 scripts/kafka.sh down' first, or set KAFKA_STATE_DIR"
	command -v openssl >/dev/null 2>&1 || die "openssl not found; it makes the test broker's certificates: 'apt-get install -y openssl' (or make deps)"
	log "making a CA, certificates and SASL passwords in $SEC"
	rm -rf "$SEC"
	mkdir -p "$SEC"
	chmod 700 "$SEC"
	(
		cd "$SEC"
		ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
		openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3650 -subj "/CN=kpipe test CA" \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
		openssl req "${ec[@]}" -keyout broker.key -out broker.csr -subj "/CN=localhost"
		printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext
		openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile broker.ext -out broker.crt
		cat broker.key broker.crt >broker.pem
		openssl req "${ec[@]}" -keyout client.key -out client.csr -subj "/CN=kpipe-client"
		printf 'extendedKeyUsage=clientAuth\n' >client.ext
		openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out client.crt
		openssl rand -hex 16 >scram.password
		openssl rand -hex 16 >plain.password
		rm -f ./*.csr ./*.ext
	) 2>"$SEC/openssl.log" || { cat "$SEC/openssl.log" >&2; die "openssl could not make the certificates (log above)"; }
	touch "$SEC/.done"
}

# secure_props are the server.properties lines of the secure listeners.
secure_props() {
	cat <<PROPS
# KAFKA_SECURE=1: SASL_SSL (PLAIN, SCRAM-SHA-512, OAUTHBEARER), mutual TLS,
# SASL_PLAINTEXT (SCRAM-SHA-256, PLAIN)
ssl.keystore.type=PEM
ssl.keystore.location=$SEC/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$SEC/ca.crt
listener.name.mtls.ssl.client.auth=required
listener.name.sasl_ssl.sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512,OAUTHBEARER
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$PLAIN_USER="$(cat "$SEC/plain.password")";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";
listener.name.sasl_ssl.oauthbearer.connections.max.reauth.ms=3600000
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-256,PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$PLAIN_USER="$(cat "$SEC/plain.password")";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
PROPS
}

cmd_security() {
	[[ -f $SEC/.done ]] || die "no secure listeners on this state dir ($STATE); start the broker with KAFKA_SECURE=1 (on a fresh state dir)"
	cat <<INFO
SASL_SSL_BOOTSTRAP=localhost:$SPORT
MTLS_BOOTSTRAP=localhost:$MPORT
SASL_PLAINTEXT_BOOTSTRAP=127.0.0.1:$PPORT
CA=$SEC/ca.crt
CA_KEY=$SEC/ca.key
CLIENT_CERT=$SEC/client.crt
CLIENT_KEY=$SEC/client.key
SCRAM_USER=$SCRAM_USER
SCRAM_PASSWORD_FILE=$SEC/scram.password
PLAIN_USER=$PLAIN_USER
PLAIN_PASSWORD_FILE=$SEC/plain.password
INFO
}

format_storage() {
	[[ -f $DATA/meta.properties ]] && return 0
	local scram=()
	if ((SECURE)); then
		local pw
		pw=$(cat "$SEC/scram.password")
		scram=(--add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$pw]" --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$pw]")
	fi
	local id
	id=$("$JAVA" -Dlog4j2.configurationFile="file:$TOOLS_LOG4J" -cp "$LIBS/*" \
		kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 | tr -d '[:space:]') ||
		die "kafka.tools.StorageTool random-uuid failed"
	[[ -n $id ]] || die "kafka.tools.StorageTool random-uuid printed nothing"
	log "formatting $DATA (cluster id $id)"
	"$JAVA" -Dlog4j2.configurationFile="file:$TOOLS_LOG4J" -cp "$LIBS/*" \
		kafka.tools.StorageTool format --cluster-id "$id" --config "$PROPS" "${scram[@]}" >&2 ||
		die "kafka.tools.StorageTool format failed for $DATA"
}

show_logs() {
	local f
	for f in "$SERVER_LOG" "$OUTFILE"; do
		[[ -s $f ]] || continue
		log "---- last lines of $f ----"
		tail -n "${1:-40}" "$f" >&2
	done
}

# ---------------------------------------------------------------- commands

wait_ready() {
	# $1 = pid; waits for the port to accept connections and the started line.
	local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
	while ((SECONDS < deadline)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			show_logs 60
			rm -f "$PIDFILE"
			die "broker (pid $pid) exited during startup; logs above, state in $STATE"
		fi
		if grep -q 'Kafka Server started' "$SERVER_LOG" 2>/dev/null && port_open "$PORT"; then
			return 0
		fi
		sleep 0.5
	done
	show_logs 60
	log "broker not ready after ${START_TIMEOUT}s; stopping it (pid $pid)"
	stop_pid "$pid"
	rm -f "$PIDFILE"
	die "broker on $BOOTSTRAP did not start within ${START_TIMEOUT}s (KAFKA_START_TIMEOUT)"
}

cmd_up() {
	local t0=$SECONDS pid
	ensure_cache
	mkdir -p "$STATE"
	# One "up"/"down" per state dir at a time. The lock fd is closed for the
	# broker itself, so it does not hold the lock for its whole life.
	local lockfd
	exec {lockfd}>"$STATE/.lock"
	flock -w $((START_TIMEOUT + 60)) "$lockfd" || die "timed out waiting for another kafka.sh on $STATE"

	if pid=$(pid_of_broker); then
		if ((SECURE)) && ! grep -q '^listeners=.*SASL_SSL' "$PROPS" 2>/dev/null; then
			die "kafka on $BOOTSTRAP (pid $pid) runs without the secure listeners KAFKA_SECURE=1 asks for; stop it ('scripts/kafka.sh down') and start it again"
		fi
		if port_open "$PORT" && grep -q 'Kafka Server started' "$SERVER_LOG" 2>/dev/null; then
			log "kafka already running on $BOOTSTRAP (pid $pid)"
			echo "$BOOTSTRAP"
			return 0
		fi
		log "broker pid $pid is alive but not ready yet; waiting"
		wait_ready "$pid"
		log "kafka ready on $BOOTSTRAP (pid $pid)"
		echo "$BOOTSTRAP"
		return 0
	fi
	if [[ -f $PIDFILE ]]; then
		log "removing stale pid file $PIDFILE"
		rm -f "$PIDFILE"
	fi

	cmd_fetch
	find_java

	port_open "$PORT" && die "127.0.0.1:$PORT is already in use by another process (not this state dir's broker); pick another KAFKA_PORT"
	port_open "$CPORT" && die "controller port 127.0.0.1:$CPORT is already in use; set KAFKA_CONTROLLER_PORT"

	if ((SECURE)); then
		port_open "$SPORT" && die "SASL_SSL port 127.0.0.1:$SPORT is already in use; set KAFKA_SASL_SSL_PORT"
		port_open "$MPORT" && die "mutual TLS port 127.0.0.1:$MPORT is already in use; set KAFKA_MTLS_PORT"
		port_open "$PPORT" && die "SASL_PLAINTEXT port 127.0.0.1:$PPORT is already in use; set KAFKA_SASL_PLAINTEXT_PORT"
		make_security
	fi
	write_configs
	format_storage

	# Fresh log per start, so the readiness check only sees this run.
	[[ -f $SERVER_LOG ]] && mv -f "$SERVER_LOG" "$SERVER_LOG.prev"
	: >"$OUTFILE"

	local heap=${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
	# shellcheck disable=SC2206 # word splitting of option strings is intended
	local jvm=($heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
		-XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
		"-Dlog4j2.configurationFile=file:$LOG4J" "-Dkafka.logs.dir=$LOGDIR"
		${KAFKA_OPTS:-})
	local launcher=()
	command -v setsid >/dev/null 2>&1 && launcher=(setsid)
	rm -f "$PIDFILE"
	log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller 127.0.0.1:$CPORT, state $STATE)"
	# The inner bash writes its own pid and execs java, so the pid file names the
	# JVM even if setsid forks. New session: a Ctrl-C in the caller's terminal or
	# a signal to its process group does not take the broker down with it.
	# shellcheck disable=SC2016 # $$ and $@ are for the inner bash
	nohup "${launcher[@]}" bash -c 'echo $$ >"$1"; shift; exec "$@"' kafka-launch "$PIDFILE" \
		"$JAVA" "${jvm[@]}" -cp "$LIBS/*" kafka.Kafka "$PROPS" \
		>"$OUTFILE" 2>&1 </dev/null {lockfd}>&- &
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -s $PIDFILE ]] && break
		sleep 0.05
	done
	pid=$(tr -dc '0-9' <"$PIDFILE" 2>/dev/null || true)
	[[ -n $pid ]] || { show_logs; die "could not start java (no pid written to $PIDFILE)"; }

	wait_ready "$pid"
	log "kafka ready on $BOOTSTRAP in $((SECONDS - t0))s (pid $pid, logs $LOGDIR)"
	echo "$BOOTSTRAP"
}

stop_pid() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "broker pid $pid still alive after 30s; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "warning: pid $pid survived SIGKILL"
}

wipe_state() {
	[[ ${KAFKA_WIPE:-0} == 1 ]] || return 0
	[[ -d $STATE ]] || return 0
	case $STATE in
	/ | "" | "$HOME" | "$REPO" | "$CACHE") die "refusing to wipe '$STATE'" ;;
	esac
	log "KAFKA_WIPE=1: deleting $STATE"
	rm -rf "$STATE"
}

cmd_down() {
	local pid lockfd
	if [[ -d $STATE ]]; then
		exec {lockfd}>"$STATE/.lock"
		flock -w $((START_TIMEOUT + 60)) "$lockfd" || die "timed out waiting for another kafka.sh on $STATE"
	fi
	if pid=$(pid_of_broker); then
		log "stopping kafka on $BOOTSTRAP (pid $pid)"
		stop_pid "$pid"
		rm -f "$PIDFILE"
		log "stopped"
	else
		[[ -f $PIDFILE ]] && rm -f "$PIDFILE"
		log "kafka on $BOOTSTRAP is not running"
	fi
	wipe_state
}

cmd_status() {
	local pid
	if pid=$(pid_of_broker) && port_open "$PORT"; then
		log "kafka running on $BOOTSTRAP (pid $pid)"
		echo running
		return 0
	fi
	echo stopped
	return 1
}

cmd_classpath() {
	cmd_fetch
	case ${1:-tools} in
	tools) echo "$TOOLS_LIBS/*" ;;
	broker) echo "$LIBS/*" ;;
	*) die "classpath: want 'tools' (default) or 'broker', got '$1'" ;;
	esac
}

cmd_tool() {
	# kafka.sh tool TopicCommand --bootstrap-server 127.0.0.1:9092 --list
	local name=${1:-}
	[[ -n $name ]] || die "tool: name a class, e.g. 'tool TopicCommand --bootstrap-server $BOOTSTRAP --list'"
	shift
	case $name in
	org.* | kafka.* | com.* | io.* | net.*) ;;
	*) name="org.apache.kafka.tools.$name" ;; # e.g. consumer.ConsoleConsumer
	esac
	cmd_fetch
	find_java
	local cfg
	cfg=$(mktemp "${TMPDIR:-/tmp}/kafka-tools-log4j2.XXXXXX.xml")
	# shellcheck disable=SC2064 # expand now
	trap "rm -f '$cfg'" EXIT
	tools_log4j_config >"$cfg"
	"$JAVA" -Xmx256m -Dlog4j2.configurationFile="file:$cfg" -cp "$TOOLS_LIBS/*" "$name" "$@"
}

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
security) cmd_security ;;
fetch) cmd_fetch ;;
classpath) cmd_classpath "${2:-tools}" ;;
tool)
	shift
	cmd_tool "$@"
	;;
-h | --help | help) usage ;;
*)
	usage
	die "unknown command '${1:-}' (want up, down, status, security, fetch, classpath or tool)"
	;;
esac
