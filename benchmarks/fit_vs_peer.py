"""Fit time against the peer: dlfusion's preprocess + train versus Horovod's own KerasEstimator.

The peer is ``horovod.spark.keras.KerasEstimator`` (horovod[spark] 0.28.1 on TF 2.13 / Keras 2, in
its own legacy venv, see benchmarks/README.md) running ``benchmarks/peers/hs_digits.py``: sklearn
digits at 32x32x3 uint8 as an in-memory Spark DataFrame -> its Parquet store -> Petastorm ->
2 Horovod ranks, the seed CNN, batch 64, EPOCHS epochs. Its ``fit_seconds`` covers what
``est.fit(df)`` does: materialize the DataFrame as Parquet and train.

dlfusion runs on the same digits with ``conf/image_cnn.yaml`` from this checkout's ``.venv``:
``dlfusion ingest`` once per workdir, untimed (the peer also starts from data already loaded), then
timed ``dlfusion preprocess`` + ``dlfusion train train.epochs=EPOCHS train.batch_size=64`` (the fit),
and ``dlfusion evaluate`` timed apart (not part of the fit; it gives the test accuracy). Each command
is timed as a whole process (``time.perf_counter`` around ``subprocess.run``), so interpreter start,
imports and the Spark/Horovod start-up count, as they do in the peer's fit for its workers.

Rounds are interleaved (peer, then dlfusion, per round) so that load from other work hits both.
Target: median over rounds of dlfusion (preprocess + train) / peer fit <= 0.5, with dlfusion's
median test accuracy >= the peer's. The test sets differ (peer: a random 20% of the 1,797 digits;
dlfusion: its 10% test split), so accuracies compare models, not identical rows.
Run from the repository root: ``.venv/bin/python benchmarks/fit_vs_peer.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("benchmarks.fit_vs_peer")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "fit_vs_peer.json"
DEFAULT_PEER_PYTHON = Path("/work/peer-venv/bin/python")
PEER_SCRIPT = REPO_ROOT / "benchmarks" / "peers" / "hs_digits.py"
DLFUSION = REPO_ROOT / ".venv" / "bin" / "dlfusion"
CONFIG = "conf/image_cnn.yaml"
BATCH_SIZE = 64  # the peer's batch size (per rank)
TARGET_RATIO = 0.5

# Use this checkout's ``pipelines.runtime.logs`` even where the package is not installed in editable mode.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import checkout_info  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=DEFAULT_PEER_PYTHON,
        help="python of the peer's legacy venv (horovod[spark] 0.28.1, TF 2.13)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="training epochs, both sides")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (peer, then dlfusion)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--workdir-root",
        type=Path,
        default=None,
        help="keep the peer stores and dlfusion workdirs in a new folder under this one "
        "(default: a temporary folder, removed at the end)",
    )
    args = parser.parse_args(argv)
    for name in ("epochs", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


# ---------------------------------------------------------------------------------------------
# running and timing the two sides


def tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a command's output, for error messages."""
    return "\n".join(text.strip().splitlines()[-lines:])


def timed(cmd: list[str], env: dict[str, str], what: str) -> tuple[float, str]:
    """Run ``cmd`` to completion; return its wall seconds and stdout. Fail with its output's tail."""
    log.info("%s: %s", what, " ".join(cmd))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(
            f"{what} failed (exit {proc.returncode}) after {seconds:.1f} s:\n"
            f"{tail(proc.stdout)}\n{tail(proc.stderr)}"
        )
    log.info("%s: %.1f s", what, seconds)
    return seconds, proc.stdout


def peer_env(peer_python: Path) -> dict[str, str]:
    """The environment of the peer: its own python for Spark's workers, nothing of this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYSPARK_PYTHON"] = str(peer_python)
    env.pop("PYSPARK_DRIVER_PYTHON", None)
    return env


def dlfusion_env() -> dict[str, str]:
    """The environment of dlfusion: no Spark python inherited from a peer setting."""
    return {k: v for k, v in os.environ.items() if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}


def run_peer(peer_python: Path, store: Path, epochs: int) -> dict:
    """One peer fit; its JSON line plus the wall seconds of the whole process."""
    cmd = [str(peer_python), "-W", "ignore", str(PEER_SCRIPT), str(store), str(epochs)]
    wall, stdout = timed(cmd, peer_env(peer_python), "peer")
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            result = json.loads(line)
            if "fit_seconds" in result:
                return {**result, "process_seconds": round(wall, 2)}
    raise RuntimeError(f"peer printed no JSON line with fit_seconds:\n{tail(stdout)}")


def run_stage(stage: str, workdir: Path, overrides: list[str]) -> tuple[float, dict]:
    """One ``dlfusion STAGE`` on ``workdir``; its wall seconds and its ``--summary-json``."""
    summary_path = workdir / f"summary-{stage}.json"
    cmd = [str(DLFUSION), stage, CONFIG, f"workdir={workdir}", *overrides]
    cmd += ["--summary-json", str(summary_path)]
    seconds, _ = timed(cmd, dlfusion_env(), f"dlfusion {stage}")
    return seconds, json.loads(summary_path.read_text())


def run_dlfusion(workdir: Path, epochs: int) -> dict:
    """Ingest (untimed for the fit), then timed preprocess + train, then evaluate timed apart."""
    train_overrides = [f"train.epochs={epochs}", f"train.batch_size={BATCH_SIZE}"]
    ingest_s, ingest = run_stage("ingest", workdir, [])
    preprocess_s, preprocess = run_stage("preprocess", workdir, [])
    train_s, train = run_stage("train", workdir, train_overrides)
    evaluate_s, evaluate = run_stage("evaluate", workdir, train_overrides)
    return {
        "ingest_seconds": round(ingest_s, 2),
        "preprocess_seconds": round(preprocess_s, 2),
        "train_seconds": round(train_s, 2),
        "fit_seconds": round(preprocess_s + train_s, 2),
        "evaluate_seconds": round(evaluate_s, 2),
        "test_accuracy": evaluate["test_metrics"]["test_accuracy"],
        "test_metrics": evaluate["test_metrics"],
        "splits": preprocess.get("splits"),
        "ingest": ingest.get("ingest"),
        "final_epoch_metrics": train.get("final_epoch_metrics"),
        "run_id": train.get("run_id"),
    }


# ---------------------------------------------------------------------------------------------
# report


def verdict(rounds: list[dict]) -> dict:
    """Medians over rounds, the ratio dlfusion fit / peer fit, and whether the target is met."""
    peer_fit = statistics.median(r["peer"]["fit_seconds"] for r in rounds)
    peer_acc = statistics.median(r["peer"]["test_accuracy"] for r in rounds)
    ours_acc = statistics.median(r["dlfusion"]["test_accuracy"] for r in rounds)
    ratio = statistics.median(r["dlfusion"]["fit_seconds"] / r["peer"]["fit_seconds"] for r in rounds)
    return {
        "peer_fit_seconds_median": peer_fit,
        "peer_test_accuracy_median": peer_acc,
        "dlfusion_fit_seconds_median": statistics.median(r["dlfusion"]["fit_seconds"] for r in rounds),
        "dlfusion_test_accuracy_median": ours_acc,
        "ratio_fit_median": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO and ours_acc >= peer_acc,
    }


def p6_ratio(summary: dict) -> dict:
    """The P6 row of the benchmark table (met only at >= the peer's test accuracy too)."""
    from benchmarks.common import ratio

    row = ratio(
        "P6",
        "dlfusion preprocess+train / Horovod KerasEstimator fit (digits, 2 ranks, 10 epochs)",
        summary["ratio_fit_median"],
        TARGET_RATIO,
        f"{summary['dlfusion_fit_seconds_median']:.1f} s vs {summary['peer_fit_seconds_median']:.1f} s; "
        f"accuracy {summary['dlfusion_test_accuracy_median']:.3f} "
        f"vs {summary['peer_test_accuracy_median']:.3f}",
        higher_is_better=False,
    )
    return {**row, "met": summary["target_met"]}


def format_table(rounds: list[dict], summary: dict) -> str:
    """The per-round figures and the verdict as a plain-text table."""
    head = (
        f"{'round':>5} {'peer fit s':>10} {'peer acc':>8} {'preproc s':>9} {'train s':>8} "
        f"{'prep+train s':>12} {'acc':>6} {'ratio':>6} {'eval s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rounds:
        p, d = r["peer"], r["dlfusion"]
        ratio = d["fit_seconds"] / p["fit_seconds"]
        lines.append(
            f"{r['round']:>5} {p['fit_seconds']:>10.1f} {p['test_accuracy']:>8.4f} "
            f"{d['preprocess_seconds']:>9.1f} {d['train_seconds']:>8.1f} {d['fit_seconds']:>12.1f} "
            f"{d['test_accuracy']:>6.4f} {ratio:>6.2f} {d['evaluate_seconds']:>7.1f}"
        )
    lines.append("-" * len(head))
    met = "met" if summary["target_met"] else "missed"
    lines.append(
        f"dlfusion (preprocess + train) / peer fit, median over {len(rounds)} round(s): "
        f"{summary['ratio_fit_median']:.2f} (target <= {TARGET_RATIO}); accuracy "
        f"{summary['dlfusion_test_accuracy_median']:.4f} vs peer {summary['peer_test_accuracy_median']:.4f}"
        f" -> target {met}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace, root: Path) -> dict:
    """All rounds, interleaved; the results as one JSON-ready dict."""
    checkout = checkout_info()  # at the start: others may commit while the rounds run
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        log.warning(
            "load average is %.2f on %d CPUs: other work is running and will slow both sides",
            load_before[0],
            os.cpu_count(),
        )
    rounds = []
    for index in range(1, args.rounds + 1):
        round_load = os.getloadavg()
        log.info("round %d of %d (load average %.2f)", index, args.rounds, round_load[0])
        peer = run_peer(args.peer_python, root / f"peer-store-{index}", args.epochs)
        ours = run_dlfusion(root / f"dlfusion-{index}", args.epochs)
        rounds.append(
            {
                "round": index,
                "peer": peer,
                "dlfusion": ours,
                "load_average_1_5_15_before": list(round_load),
                "load_average_1_5_15_after": list(os.getloadavg()),
            }
        )
    return {
        "benchmark": "fit_vs_peer",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_1_5_15_before": list(load_before),
            "load_average_1_5_15_after": list(os.getloadavg()),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "checkout": checkout,
        "parameters": {
            "epochs": args.epochs,
            "rounds": args.rounds,
            "batch_size_per_rank": BATCH_SIZE,
            "config": CONFIG,
            "peer_python": str(args.peer_python),
            "peer_script": str(PEER_SCRIPT.relative_to(REPO_ROOT)),
        },
        "rounds": rounds,
        "summary": verdict(rounds),
        "ratios": [p6_ratio(verdict(rounds))],
        "notes": (
            "peer fit_seconds: time of KerasEstimator.fit(df) inside the peer process (DataFrame -> store "
            "Parquet -> Petastorm -> 2 Horovod ranks). dlfusion fit_seconds: wall time of the preprocess "
            "and train processes (spawned from this script). ingest and evaluate are untimed for the fit. "
            "Test sets differ: peer 20% random split of the digits, dlfusion its 10% test split."
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.access(args.peer_python, os.X_OK):
        print(
            f"fit_vs_peer: no peer python at {args.peer_python}: build the peer's legacy venv "
            "(TF 2.13, horovod[spark] 0.28.1) with the recipe in benchmarks/README.md (on the "
            "development machines also /work/shared/peers/README.md), or pass --peer-python",
            file=sys.stderr,
        )
        return 2
    if not os.access(DLFUSION, os.X_OK):
        print(f"fit_vs_peer: no {DLFUSION}; run `make` first to set up .venv", file=sys.stderr)
        return 2
    from pipelines.runtime.logs import setup_logging

    setup_logging()
    if args.workdir_root is None:
        with tempfile.TemporaryDirectory(prefix="fit-vs-peer-") as tmp:
            results = run(args, Path(tmp))
    else:
        args.workdir_root.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="fit-vs-peer-", dir=args.workdir_root.resolve()))
        log.info("peer stores and dlfusion workdirs go to %s (kept)", root)
        results = run(args, root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(format_table(results["rounds"], results["summary"]))
    log.info("results written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
