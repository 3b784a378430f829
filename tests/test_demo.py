"""The seed demo: Adam through polyfit.polyval and the closed-form polyfit.fit both recover 5x^2 + 3."""

import subprocess
import sys

import torch

from polyfit import demo


def test_demo_run(capsys):
    out = demo.run(steps=300, seed=0)
    text = capsys.readouterr().out
    assert "Adam" in text and "polyfit.fit" in text
    true = torch.tensor([3.0, 0.0, 5.0])
    assert (out["fit"] - true).abs().max() < 1e-3  # exact data, float32 samples
    assert out["fit_error"] < 1e-3
    assert torch.isfinite(out["adam"]).all()


def test_demo_cli():
    r = subprocess.run([sys.executable, "-m", "polyfit", "demo", "--steps", "50"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "polyfit.fit" in r.stdout
