"""``gnomon.plot``: generic figures from Signals (matplotlib, imported lazily, headless-safe).

* :func:`history` — one axis: signals as components, summary (RMS / norm / mean-abs) or hybrid; residuals
  when the truth is known; one line per chain for sampler runs.
* :func:`grid` — panels of signals with a shared step/draw axis and final values in the titles.
* :func:`loss` — loss (or log_prob) history with an optional reference line.
* :func:`curvature` — diagonal curvature and learning rates per θ index.
* :func:`eigen_spectrum` — eigenvalues labelled by each mode's dominant parameter.
* :func:`campaign`, :func:`z_distribution` — an experiment's estimates ± σ per parameter across its runs
  (epochs), and its z-scores against N(0, 1) with a Kolmogorov–Smirnov test.
* :func:`pair` — a corner plot of posterior draws or of an ensemble of estimates (many fits), with truth
  markers and Cramér–Rao ellipses at 1σ / 2σ beside the posterior contours.
* :func:`rank`, :func:`trace_dist`, :func:`forest` — sampler views through arviz-plots, named and in the
  layout's units.

Every function returns a matplotlib Figure, accepts ``save=`` (a file) and never opens a window unless
``show=True``. The core knows nothing of any domain; figure sets for a domain live in
:mod:`gnomon.recipes`.
"""

from gnomon.plot.campaign import campaign, normal_ks, z_distribution
from gnomon.plot.grid import default_panels, grid
from gnomon.plot.history import draw, history
from gnomon.plot.loss import loss
from gnomon.plot.pair import pair
from gnomon.plot.sampler import forest, rank, to_datatree, trace_dist
from gnomon.plot.spectra import curvature, dominant_parameters, eigen_spectrum

__all__ = [
    "history",
    "grid",
    "loss",
    "draw",
    "default_panels",
    "curvature",
    "eigen_spectrum",
    "dominant_parameters",
    "rank",
    "trace_dist",
    "pair",
    "forest",
    "to_datatree",
    "campaign",
    "z_distribution",
    "normal_ks",
]
