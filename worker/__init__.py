"""Job execution on a Dask cluster: the embedded LocalCluster by default, or LOUPE_SCHEDULER."""
