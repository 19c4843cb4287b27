#!/usr/bin/env bash
# Smoke test of the image as docker/docker-compose.yml uses it, run inside the `smoke` stage of
# docker/Dockerfile as the non-root user: a Spark standalone master and two workers started the way the
# compose services start them (spark-class from the venv's pyspark; workers with --work-dir outside the
# read-only venv), then the digits demo for one epoch with spark.master=spark://..., so that ingest,
# preprocess and evaluate run on the workers' executors and the Horovod ranks run beside the driver.
# Everything listens on 127.0.0.1 on free ports (a build step may share the host's network); the daemons
# run in their own sessions (setsid), so that cleanup stops them with all their children.
set -Eeuo pipefail
root=/tmp/cluster-smoke
mkdir -p "$root"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; }
show_logs() { echo "cluster-smoke: FAILED; logs:" >&2; tail -n 30 "$root"/*.log >&2 || true; }
trap cleanup EXIT
trap show_logs ERR
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

port=$(free_port)
ui=$(free_port)
setsid -w spark-class org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port "$ui" \
  >"$root/master.log" 2>&1 &
pids+=($!)
for n in 1 2; do
  setsid -w spark-class org.apache.spark.deploy.worker.Worker "spark://127.0.0.1:$port" --host 127.0.0.1 \
    --cores 1 --memory 2g --work-dir "$root/worker-$n" --webui-port "$(free_port)" \
    >"$root/worker-$n.log" 2>&1 &
  pids+=($!)
done
# Wait until the master lists both workers as alive.
python - "$ui" <<'EOF'
import json, sys, time, urllib.request
deadline = time.time() + 120
while True:
    try:
        state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/json/", timeout=2))
        if sum(w["state"] == "ALIVE" for w in state["workers"]) == 2:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("cluster-smoke: the two workers did not register with the master")
    time.sleep(1)
EOF

dlfusion run conf/image_cnn.yaml train.epochs=1 "spark.master=spark://127.0.0.1:$port" \
  workdir="$root/work" --summary-json "$root/summary.json"
python - "$root/summary.json" "$root" <<'EOF'
import json, pathlib, sys
s = json.load(open(sys.argv[1]))
acc = s["primary_metric"]["test_accuracy"]
assert s["status"] == "succeeded" and 0.0 <= acc <= 1.0, s
# The executors ran on the workers: each worker made an application folder.
apps = [p for p in pathlib.Path(sys.argv[2]).glob("worker-*/app-*") if p.is_dir()]
assert len({p.parent for p in apps}) == 2, apps
print(f"cluster-smoke: dlfusion run on spark://127.0.0.1 (2 workers) succeeded, test_accuracy {acc:.4f}")
EOF
