"""Shared fixtures: every device-aware test runs on the CPU and, where a GPU exists, on CUDA."""

import pytest
import torch

import polyfit

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    if request.param == "cuda" and not HAS_CUDA:
        pytest.skip("no CUDA device")
    return torch.device(request.param)


@pytest.fixture(params=polyfit.BASES)
def basis(request):
    return request.param
