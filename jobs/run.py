"""spark-submit entry point for the run stage: spark-submit jobs/run.py CONFIG [KEY=VALUE ...]."""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], quiet_console=True))
