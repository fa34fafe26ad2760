import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

from hypothesis import settings  # noqa: E402

# JAX compiles on first use of each shape; keep property tests short and deadline-free.
settings.register_profile("gnomon", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("gnomon")
