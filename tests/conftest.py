import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# `gnomon plot` turns JAX's persistent compilation cache on in-process: keep it out of the user's home
os.environ.setdefault("GNOMON_CACHE_DIR", tempfile.mkdtemp(prefix="gnomon-test-cache-"))

from hypothesis import settings  # noqa: E402

# JAX compiles on first use of each shape; keep property tests short and deadline-free.
settings.register_profile("gnomon", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("gnomon")
