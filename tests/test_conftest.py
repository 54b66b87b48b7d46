"""The shared-data guard: users without ../shared skip, CI (ESTDEPTH_REQUIRE_SHARED) fails."""

import pytest

from tests import conftest


def test_missing_shared_file_skips_for_users(monkeypatch, tmp_path):
    monkeypatch.setenv("ESTDEPTH_SHARED", str(tmp_path))
    monkeypatch.setattr(conftest, "REQUIRE_SHARED", False)
    with pytest.raises(pytest.skip.Exception, match="absent"):
        conftest.shared_path("reference", "nothing.pt")
    assert conftest.shared_available(tmp_path / "nothing") is False


def test_missing_shared_file_fails_when_required(monkeypatch, tmp_path):
    monkeypatch.setenv("ESTDEPTH_SHARED", str(tmp_path))
    monkeypatch.setattr(conftest, "REQUIRE_SHARED", True)
    with pytest.raises(pytest.fail.Exception, match="ESTDEPTH_REQUIRE_SHARED"):
        conftest.shared_path("reference", "nothing.pt")
    with pytest.raises(pytest.fail.Exception, match="ESTDEPTH_REQUIRE_SHARED"):
        conftest.shared_available(tmp_path / "nothing")
    (tmp_path / "here").mkdir()
    assert conftest.shared_path("here") == tmp_path / "here"
