"""The processes the stages run in: the Spark session and its daemon, Horovod's local ranks,
process groups, progress, locks and logs."""
