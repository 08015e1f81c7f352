"""Training tests run tiny networks: one intra-op thread is faster than several (no spin-waiting
threads fighting over shared cores), and results do not depend on the machine's core count."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
