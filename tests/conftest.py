"""Shared test configuration: CUDA tests are skipped where no CUDA device exists."""

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _one_thread_and_default_dtype_restored():
    """Every test runs torch single-threaded and leaves torch's default dtype as it found it.

    The suite's tensors are small: on a 2-core CI machine, intra-op threads only add
    contention (tens of times slower under load), and one thread makes timings and
    results independent of the machine's core count. Restoring the default dtype keeps a
    test (or an executed documentation page) that sets float64 from leaking into the next.
    """
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def devices():
    """The devices a device-parametrised test runs on (CUDA marked, so skipped without it)."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
