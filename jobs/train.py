"""spark-submit entry point for the train stage: spark-submit jobs/train.py CONFIG [KEY=VALUE ...]."""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], quiet_console=True))
