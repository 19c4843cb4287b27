#!/usr/bin/env bash
# Smoke test of the MLflow server image, run as root inside the `smoke` stage of docker/Dockerfile.mlflow
# (docker/image-test.sh builds it). It starts what docker-compose.yml starts, in one build step:
# PostgreSQL (Debian's), an S3 endpoint (moto, standing in for MinIO) with a bucket, and `mlflow server`
# as the image's user, configured only through the environment as compose does. A client without any S3
# credentials then logs a run with an artifact through the server's artifact proxy, and the script
# checks that the run is in PostgreSQL, the artifact is in the bucket, and foreign Host headers are
# refused. Ports are picked free on 127.0.0.1 (a build step may share the host's network).
set -Eeuo pipefail
# Each service runs in its own session (setsid), so that cleanup stops it with all its children.
logs=/tmp/mlflow-smoke
mkdir -p "$logs"
pids=()
pg_version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n1)

cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  pg_ctlcluster "$pg_version" smoke stop 2>/dev/null || true
}
show_logs() {
  echo "mlflow-smoke: FAILED; logs:" >&2
  tail -n 40 "$logs"/*.log >&2 || true
}
trap cleanup EXIT
trap show_logs ERR

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # URL, seconds, pid of the server (fail at once if it exits)
  python - "$1" "$2" "$3" <<'EOF'
import os, sys, time, urllib.request
url, deadline, pid = sys.argv[1], time.time() + float(sys.argv[2]), int(sys.argv[3])
while True:
    try:
        urllib.request.urlopen(url, timeout=2)
        break
    except Exception as err:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"exited before it was up: {url}")
        if time.time() > deadline:
            sys.exit(f"not up: {url}: {err}")
        time.sleep(0.5)
EOF
}

pg_port=$(free_port)
s3_port=$(free_port)
mlflow_port=$(free_port)

# PostgreSQL, with a password-authenticated user over TCP, as the compose file's URI uses it.
pg_createcluster --port="$pg_port" "$pg_version" smoke >"$logs/postgres-create.log"
pg_ctlcluster "$pg_version" smoke start
runuser -u postgres -- psql -p "$pg_port" -v ON_ERROR_STOP=1 -q \
  -c "CREATE USER mlflow PASSWORD 'smoke-pg-password'" -c "CREATE DATABASE mlflow OWNER mlflow"

# S3 on 127.0.0.1, and the bucket.
export AWS_DEFAULT_REGION=us-east-1
AWS_ACCESS_KEY_ID=smoke-key AWS_SECRET_ACCESS_KEY=smoke-secret \
  setsid -w /opt/smoke/bin/moto_server -H 127.0.0.1 -p "$s3_port" >"$logs/s3.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$s3_port/" 60 "${pids[-1]}"
AWS_ACCESS_KEY_ID=smoke-key AWS_SECRET_ACCESS_KEY=smoke-secret python -c "
import boto3
boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port').create_bucket(Bucket='mlflow')"

# The server: the image's user, its options from the environment only (the image sets MLFLOW_HOST and
# MLFLOW_PORT; here loopback and a free port instead of 0.0.0.0:5000).
setsid -w runuser -u mlflow -- env \
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:smoke-pg-password@127.0.0.1:$pg_port/mlflow" \
  MLFLOW_ARTIFACTS_DESTINATION=s3://mlflow \
  MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$s3_port" \
  AWS_ACCESS_KEY_ID=smoke-key AWS_SECRET_ACCESS_KEY=smoke-secret \
  MLFLOW_SERVER_ALLOWED_HOSTS='mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*' \
  MLFLOW_HOST=127.0.0.1 MLFLOW_PORT="$mlflow_port" MLFLOW_WORKERS=1 \
  mlflow server >"$logs/server.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$mlflow_port/health" 180 "${pids[-1]}"

# A client with no S3 credentials at all: artifacts go through the server.
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_DEFAULT_REGION GIT_PYTHON_REFRESH=quiet \
  MLFLOW_TRACKING_URI="http://127.0.0.1:$mlflow_port" python - "$mlflow_port" <<'EOF'
import sys, tempfile, urllib.error, urllib.request
import mlflow

mlflow.set_experiment("smoke")
with mlflow.start_run() as run:
    mlflow.log_param("p", 1)
    mlflow.log_metric("m", 0.5)
    mlflow.log_text("hello from the smoke test", "notes/hello.txt")
assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
client = mlflow.MlflowClient()
assert client.get_run(run.info.run_id).data.metrics == {"m": 0.5}
assert [f.path for f in client.list_artifacts(run.info.run_id, "notes")] == ["notes/hello.txt"]
with tempfile.TemporaryDirectory() as tmp:
    path = client.download_artifacts(run.info.run_id, "notes/hello.txt", tmp)
    assert open(path).read() == "hello from the smoke test"

port = sys.argv[1]
url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=smoke"
def status(host):
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code
assert status(f"mlflow:{port}") == 200, status(f"mlflow:{port}")
assert status("attacker.example") in (400, 403), status("attacker.example")
print(f"mlflow-smoke: run {run.info.run_id} logged through the server, artifact {run.info.artifact_uri}")
EOF

# The run is in PostgreSQL and the artifact in the bucket.
runs=$(runuser -u postgres -- psql -p "$pg_port" -d mlflow -tA -c "SELECT count(*) FROM runs")
[ "$runs" -ge 1 ]
AWS_ACCESS_KEY_ID=smoke-key AWS_SECRET_ACCESS_KEY=smoke-secret python -c "
import boto3
keys = [o['Key'] for o in boto3.client('s3', endpoint_url='http://127.0.0.1:$s3_port')
        .list_objects_v2(Bucket='mlflow').get('Contents', [])]
assert any(k.endswith('notes/hello.txt') for k in keys), keys
print('mlflow-smoke: in the bucket:', keys)"
echo "mlflow-smoke: passed (runs in PostgreSQL: $runs; artifact in S3; foreign Host header refused)"
