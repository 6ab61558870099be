#!/usr/bin/env bash
# The kafka service's command (docker-compose.yml): writes the broker's JAAS login — the super user `admin` over
# SASL/PLAIN, its password from KAFKA_ADMIN_PASSWORD; the Vigil users log in with SCRAM-SHA-512, created by the
# kafka-init job — and a client config for the healthcheck and operators, then hands over to the image's own start
# script, which renders server.properties from the KAFKA_* environment and formats the KRaft storage once.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD (python -m vigil.bus.acls passwords)}"
dir=/tmp/vigil-kafka
umask 077
mkdir -p "$dir"
cat >"$dir/jaas.conf" <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
    username="admin" password="${KAFKA_ADMIN_PASSWORD}" user_admin="${KAFKA_ADMIN_PASSWORD}";
  org.apache.kafka.common.security.scram.ScramLoginModule required;
};
JAAS
cat >"$dir/admin.properties" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
PROPS
export KAFKA_OPTS="${KAFKA_OPTS:-} -Djava.security.auth.login.config=$dir/jaas.conf"
# The image turns every KAFKA_* variable into a broker property: the password must not become one.
unset KAFKA_ADMIN_PASSWORD
exec /etc/kafka/docker/run
