"""Signals: named, unit-carrying time series derived from traces (see :mod:`gnomon.signals.signals`)."""

from gnomon.signals import transforms, units
from gnomon.signals.signals import Signal, Signals

__all__ = ["Signal", "Signals", "transforms", "units"]
