"""One run directory's file format: ``trace.npz``, ``meta.json``, ``summary.json`` and the optional files,
written atomically and schema-versioned (:func:`gnomon.save_run` / :func:`gnomon.load_run` in
:mod:`gnomon.io.run`), the JSON/NPZ writers, a run's state, its parameter and sampling summaries, netCDF.

Nothing here knows about experiments (many runs: :mod:`gnomon.experiment`) or imports an engine.
"""
