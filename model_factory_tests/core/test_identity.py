"""What a train run's identity covers: the code, and the library releases that shape its bytes."""

from __future__ import annotations

from importlib.metadata import version

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
