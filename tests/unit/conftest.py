"""Shared fixtures for unit tests: recorded XML and libvirt's test driver."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixture_text():
    def read(name: str) -> str:
        return (FIXTURES / name).read_text()
    return read


@pytest.fixture
def test_conn():
    libvirt = pytest.importorskip("libvirt")
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()
