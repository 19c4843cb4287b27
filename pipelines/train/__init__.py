"""Split Parquet -> Horovod ranks -> a trained model logged to MLflow."""
