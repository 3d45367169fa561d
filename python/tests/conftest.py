"""Shared fixtures. The tests need libsparkv: `make test-python` at the repository root points
SPARKV_LIBRARY at build/libsparkv.so."""

import numpy as np
import pytest

import sparkv


def pytest_report_header(config):
    try:
        return f"sparkv {sparkv.version()} from {sparkv.library_path()} (package {sparkv.__file__})"
    except sparkv.LibraryNotFoundError as exc:
        return f"sparkv: library not found ({exc})"


def pytest_sessionstart(session):
    try:
        sparkv.version()
    except sparkv.LibraryNotFoundError as exc:
        pytest.exit(f"cannot run the sparkv tests without libsparkv: {exc}", returncode=1)


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)
