"""The text kind on small, imbalanced, three-class data with a real signal (issue 21, item 4).

Writes generated reviews, about 65% positive, 26% negative and 9% mixed (a review whose opinions
are half praise, half blame: the signal is in their balance), and runs ``dlfusion run
conf/text_lstm.yaml`` on them from a clean environment for each ``model.architecture`` asked for.
Reported per run: the test macro-F1 and accuracy of the model, of the majority class and of the
bag-of-words logistic regression evaluate trains with Spark MLlib on the same splits.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.common import machine_info  # noqa: E402

DLFUSION = REPO_ROOT / ".venv" / "bin" / "dlfusion"
SHARES = {"positive": 0.65, "negative": 0.26, "mixed": 0.09}


def write_reviews(path: Path, count: int, seed: int) -> Path:
    """``count`` reviews (review, sentiment) in the ``SHARES`` proportions."""
    from pipelines.kinds.text_lstm import demo

    rng = np.random.default_rng(seed)
    labels = rng.choice(list(SHARES), size=count, p=list(SHARES.values()))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["review", "sentiment"])
        for label in labels:
            if label == "mixed":  # as many opinions each way
                sentences = [
                    demo._opinion(rng, positive) for positive in (True, False) * int(rng.integers(1, 4))
                ]
                rng.shuffle(sentences)
                text = " ".join(sentences)
            else:
                text = demo.generate_review(rng, label == "positive")
            writer.writerow([text, label])
    return path


def run(source: Path, workdir: Path, architecture: str, epochs: int | None, overrides: list[str]) -> dict:
    summary = workdir / "summary.json"
    command = [
        str(DLFUSION),
        "run",
        "conf/text_lstm.yaml",
        f"workdir={workdir}",
        f"data.source={source}",
        "data.labels=[negative,mixed,positive]",
        "preprocess.rows_per_row_group=64",  # a small set: enough row groups for both ranks
        f"model.architecture={architecture}",
        *([f"train.epochs={epochs}"] if epochs else []),
        *overrides,
        "--summary-json",
        str(summary),
    ]
    environment = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"dlfusion run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = json.loads(summary.read_text())["test_metrics"]
    keys = (
        "test_macro_f1",
        "test_accuracy",
        "test_majority_macro_f1",
        "test_bow_macro_f1",
        "test_bow_accuracy",
    )
    return {
        "architecture": architecture,
        "seconds": time.perf_counter() - started,
        **{k: metrics[k] for k in keys},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reviews", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8, help="0: the config's own")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--architectures", nargs="*", default=["lstm", "bag"])
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "text_imbalanced.json"
    )
    args = parser.parse_args(argv)
    before = machine_info()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlfusion-text-") as tmp:
        source = write_reviews(Path(tmp) / "reviews.tsv", args.reviews, seed=11)
        for architecture in args.architectures:
            row = run(source, Path(tmp) / architecture, architecture, args.epochs, args.set)
            rows.append(row)
            print(
                f"{architecture:>6}: macro-F1 {row['test_macro_f1']:.3f} "
                f"(accuracy {row['test_accuracy']:.3f}); "
                f"majority {row['test_majority_macro_f1']:.3f}; bag-of-words {row['test_bow_macro_f1']:.3f} "
                f"(accuracy {row['test_bow_accuracy']:.3f}); {row['seconds']:.0f} s",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": before, "args": vars(args), "rows": rows}, indent=2, default=str)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
