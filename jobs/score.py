"""spark-submit entry point for batch scoring of new raw data with a logged model.

spark-submit jobs/score.py CONFIG model_uri=models:/NAME@champion data.source=PATH output=PATH
"""

import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]], quiet_console=True))
