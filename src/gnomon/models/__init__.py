"""Forward models shipped with gnomon (the flagship: :mod:`gnomon.models.astrometry`).

Models are plain JAX functions of a flat θ plus a :class:`gnomon.Layout` naming it; they depend on the
θ-space and objective layers only, never on engines.
"""
