"""The stage table is the one list of stages: everything that names stages agrees with it."""

from __future__ import annotations

import ast
import inspect

from pipelines.core.stages import BY_NAME, CHAIN, KIND_STAGES, NAMES, STAGES, StageResult
from pipelines.kinds import kind_named, registered
from pipelines.pipeline import freshness, runner
from tests.support.cli import ROOT, dlfusion


def _literal(path, name: str):
    """The value of the module-level assignment ``name = <literal>`` in ``path`` (without importing it)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError(f"{path}: no {name}")


def test_every_stage_but_run_has_an_entry_that_returns_a_stage_result():
    for stage in STAGES:
        if stage.name == "run":
            assert stage.entry is None
            continue
        entry = runner._entry(stage.name)
        assert inspect.signature(entry).return_annotation in ("StageResult", StageResult), stage.name
        assert inspect.signature(entry).parameters.keys() >= {"config"}, stage.name
    assert CHAIN[: len(KIND_STAGES)] == KIND_STAGES


def test_freshness_takes_each_stages_config_sections_from_the_table():
    assert set(freshness.OWN_KEYS) == {name for name in CHAIN if BY_NAME[name].config_sections is not None}
    assert [name for name in CHAIN if BY_NAME[name].config_sections is None] == ["train"]


def test_every_kind_runs_chained_stages_in_the_tables_order():
    for name in registered():
        stages = kind_named(name).stages
        assert list(stages) == [stage for stage in CHAIN if stage in stages]


def test_each_stage_has_a_spark_submit_entry_point_and_the_airflow_dag_runs_the_chain():
    assert {path.stem for path in (ROOT / "jobs").glob("*.py")} == set(NAMES)
    assert _literal(ROOT / "jobs" / "airflow" / "dlfusion_dag.py", "STAGES") == CHAIN
    assert _literal(ROOT / "jobs" / "airflow" / "tests" / "test_dlfusion_dag.py", "STAGES") == CHAIN


def test_the_help_lists_every_stage_with_its_description():
    result = dlfusion("--help", timeout=120)
    assert result.returncode == 0
    shown = " ".join(result.stdout.split())
    for stage in BY_NAME.values():
        assert stage.name in shown and stage.help in shown
    assert "mlflow-server" in shown
