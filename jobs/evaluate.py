"""spark-submit entry point for the evaluate stage: spark-submit jobs/evaluate.py CONFIG [KEY=VALUE ...]."""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]], quiet_console=True))
