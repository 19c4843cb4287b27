"""spark-submit entry point for the preprocess stage.

spark-submit jobs/preprocess.py CONFIG [KEY=VALUE ...]
"""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]], quiet_console=True))
