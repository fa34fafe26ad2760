"""Many runs: experiments (manifest, run ids, writers that many processes share), batches, campaigns,
incomplete runs and aggregation into one table. One run's format is :mod:`gnomon.io`.
"""
