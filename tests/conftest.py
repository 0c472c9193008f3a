"""Shared fixtures: tiny real models built from configs in seconds (session-scoped)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
AIGC_CODE = [sys.executable, "-m", "aigc_code"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from aigc_code.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model_nofim(tmp_path_factory) -> Path:
    from aigc_code.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-nofim") / "model", fim=False)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model):
    from aigc_code.engine import load_engine

    return load_engine(tiny_model)
