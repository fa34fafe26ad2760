"""Signals: named, unit-carrying time series derived from traces (see :mod:`gnomon.signals.signals`)."""

from gnomon.signals import transforms
from gnomon.signals.signals import Signal, Signals
from gnomon.thetaspace import units

__all__ = ["Signal", "Signals", "transforms", "units"]
