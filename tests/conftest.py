"""Suite-wide: zeustune's user folder (exported schedules, preset lookup) is a fresh temporary
one, so what a developer tuned on this machine never changes what the tests see; and the fixtures
several test modules share (their plain helpers are in helpers.py)."""

import os
import tempfile

import pytest

os.environ["ZEUSTUNE_HOME"] = tempfile.mkdtemp(prefix="zeustune-home-")


@pytest.fixture
def psis():
    """Two seeded fresh outputs ``(prev, last)`` of shape (2, 3), for the predictors' formulas."""
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)  # prev, last
