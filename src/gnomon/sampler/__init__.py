"""The sampler engine: kernels (NUTS, HMC) behind one protocol, warmup adaptation, the phases of a run
(seed check, recovery, stuck chains), where chains start, the metric from curvature, the draws' health check,
and the hand-off bundle with its files. ``gn.sample`` lives in :mod:`gnomon.sampler.api`.

Importing this package imports nothing heavy (blackjax loads when a program is built): use the submodules.
"""
