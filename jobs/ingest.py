"""spark-submit entry point for the ingest stage: spark-submit jobs/ingest.py CONFIG [KEY=VALUE ...]."""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]], quiet_console=True))
