"""Solver tests run their small tensor kernels single-threaded: on shared CI machines with
few cores, intra-op threads only add contention for tensors of this size."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
