"""requirements.txt and environment.yml: what the code imports is pinned."""

from tests.helpers import ROOT


def test_tensorboard_is_a_pinned_requirement():
    import tensorboard

    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split()
                if "==" in line)
    assert pins.get("tensorboard") == tensorboard.__version__
    assert "-r requirements.txt" in (ROOT / "environment.yml").read_text()  # the same pins
