import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    """Pipeline tests train tiny 3D networks: one torch thread is as fast on two idle cores and several
    times faster when other processes share them (OpenMP oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
