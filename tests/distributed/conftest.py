"""Fixtures of the scale-out tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def small_demo(demo_root):
    from mammo.data.demo import ensure_demo_dataset

    ensure_demo_dataset(demo_root, 24, 0, 160, 128)  # made once, so parallel jobs only train
    return demo_root
