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
