#!/usr/bin/env bash
# Apache Spark Connect server with Delta Lake: the alternative engine to Sail (`engine: sc://<host>:15002`).
# The Delta and s3a jars are baked into $SPARK_HOME/jars (infra/docker/Dockerfile, target spark-connect), so
# nothing is resolved at run time. Without baked jars the same server would be started with
#   start-connect-server.sh --packages io.delta:delta-spark_2.13:4.0.0,org.apache.hadoop:hadoop-aws:3.4.1 \
#     --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
#     --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
# which downloads from Maven Central at every start on an empty Ivy cache.
#
# The lake is addressed as s3://... (config `lake_root`): s3 is mapped to Hadoop's S3A file system, which takes
# its credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and its endpoint from AWS_ENDPOINT_URL.
# Extra arguments are passed on (e.g. --master spark://... or k8s://...).
set -euo pipefail

export SPARK_NO_DAEMONIZE=1   # spark-daemon.sh runs the server in the foreground
args=(
  --master "${SPARK_MASTER:-local[*]}"
  --conf "spark.connect.grpc.binding.port=${SPARK_CONNECT_PORT:-15002}"
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
  --conf spark.sql.session.timeZone=UTC
  --conf spark.hadoop.fs.s3.impl=org.apache.hadoop.fs.s3a.S3AFileSystem
  --conf spark.hadoop.fs.s3a.path.style.access=true
  --conf "spark.hadoop.fs.s3a.endpoint.region=${AWS_REGION:-us-east-1}"
  --conf "spark.pyspark.python=${PYSPARK_PYTHON:-/opt/citysafe/.venv/pipeline/bin/python}"
)
if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
  args+=(--conf "spark.hadoop.fs.s3a.endpoint=${AWS_ENDPOINT_URL}")
fi
exec "${SPARK_HOME:-/opt/spark}/sbin/start-connect-server.sh" "${args[@]}" "$@"
