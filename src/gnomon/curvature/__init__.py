"""Curvature estimates (Hessian / Gauss–Newton / Fisher diagonals and dense matrices) and the per-index
learning rates built from them.

``estimate`` holds the estimators (:func:`estimate_curvature`, :class:`Curvature`); ``precondition`` turns a
curvature into a learning-rate vector and an optax transformation. Importing this package imports nothing
heavy: use the submodules.
"""
