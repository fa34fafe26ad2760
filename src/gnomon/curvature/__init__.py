"""Curvature estimates (Hessian / Gauss–Newton / Fisher diagonals and dense matrices) and the per-index
learning rates built from them.

``result`` defines :class:`Curvature`; ``estimate`` plans and runs the estimators (:func:`estimate_curvature`)
over the pure numerics in ``numerics`` and ``fisher`` (the expected Fisher of likelihood objectives); ``crlb``
turns a Fisher into Cramér–Rao bounds (:func:`cramer_rao`); ``precondition`` turns a curvature into a
learning-rate vector and an optax transformation; ``mass_matrix`` into HMC/NUTS metrics. Importing this package
imports nothing heavy: use the submodules.
"""
