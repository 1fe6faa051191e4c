"""What a train run's identity covers: the code, and the library releases that shape its bytes."""

from __future__ import annotations

from importlib.metadata import version
from types import SimpleNamespace

import pytest

import model_factory.core.identity as identity


@pytest.fixture
def fresh_code_version():
    identity.code_version.cache_clear()
    yield identity.code_version
    identity.code_version.cache_clear()


def test_code_version_is_stable_within_a_release(fresh_code_version):
    first = fresh_code_version()
    identity.code_version.cache_clear()
    assert fresh_code_version() == first


@pytest.mark.parametrize("library", identity.RUNTIME)
def test_another_release_of_a_library_that_shapes_the_bytes_is_another_code_version(
    fresh_code_version, monkeypatch, library
):
    """Polars writes its release into every frame's parquet (created_by): the same week under
    another Polars is another frame digest, so it must be another train run, not a re-run
    refused for writing a different bundle under the same id."""
    before = fresh_code_version()
    identity.code_version.cache_clear()
    monkeypatch.setattr(
        identity, "version", lambda name: "0.0.0" if name == library else version(name)
    )
    assert fresh_code_version() != before


def test_another_python_release_is_another_code_version(fresh_code_version, monkeypatch):
    before = fresh_code_version()
    identity.code_version.cache_clear()
    monkeypatch.setattr(identity.sys, "version_info", SimpleNamespace(major=3, minor=99))
    assert fresh_code_version() != before


def test_the_error_wording_receipts_quote_is_part_of_the_code_version(
    fresh_code_version, monkeypatch
):
    """A gate receipt quotes an error's message (a champion that could not be scored): other
    wording is other receipt bytes, so it must be another train run, not a refused re-run."""
    from pathlib import Path

    before = fresh_code_version()
    identity.code_version.cache_clear()
    errors = Path(identity.__file__).resolve().parent.parent / "errors.py"
    real = Path.read_bytes

    def read(path: Path) -> bytes:
        return real(path) + (b"# reworded\n" if path == errors else b"")

    monkeypatch.setattr(Path, "read_bytes", read)
    assert fresh_code_version() != before
