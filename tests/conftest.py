"""Shared fixtures: every device-aware test runs on the CPU and, where a GPU exists, on CUDA."""

import os

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


def pytest_collection_modifyitems(config, items):
    # `make test-portable` runs the suite on polyfit's portable kernels (ATEN_CPU_CAPABILITY=default,
    # as on a CPU without AVX2). torch's inductor cannot compile its C++ under that setting (its
    # code refers to at::vec, which the forced capability leaves undeclared), so the tests that
    # compile with inductor run in the main suite only.
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() != "default":
        return
    skip = pytest.mark.skip(reason="torch inductor cannot compile C++ under ATEN_CPU_CAPABILITY=default")
    for item in items:
        if "inductor" in item.keywords:
            item.add_marker(skip)
