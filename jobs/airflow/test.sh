#!/usr/bin/env bash
# make airflow-test: the dlfusion DAG under a real Airflow.
# Airflow lives in its own venv (.venv-airflow, created when missing or older than requirements.txt),
# with a throwaway AIRFLOW_HOME and SQLite database; the DAG's tasks call the project's
# .venv/bin/dlfusion. Arguments go to pytest (e.g. -k chain).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv-airflow"
requirements="$root/jobs/airflow/requirements.txt"
stamp="$venv/.installed"

test -x "$root/.venv/bin/dlfusion" || { echo "no $root/.venv/bin/dlfusion: run make run (or make test) first" >&2; exit 2; }
if [ ! -f "$stamp" ] || [ "$requirements" -nt "$stamp" ]; then
  test -x "$venv/bin/python" || "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install -q -r "$requirements"
  touch "$stamp"
fi

AIRFLOW_HOME="$(mktemp -d -t dlfusion-airflow.XXXXXX)"
export AIRFLOW_HOME
trap 'rm -rf "$AIRFLOW_HOME"' EXIT
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$AIRFLOW_HOME/dags"
export DLFUSION_HOME="$root"
"$venv/bin/airflow" db migrate >"$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
"$venv/bin/python" -m pytest -c "$root/jobs/airflow/pytest.ini" "$root/jobs/airflow/tests" "$@"
