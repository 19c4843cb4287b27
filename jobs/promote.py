"""spark-submit entry point for the promotion gate.

spark-submit jobs/promote.py CONFIG [--override-gate] [--force] [KEY=VALUE ...]
"""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["promote", *sys.argv[1:]], quiet_console=True))
