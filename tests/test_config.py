"""The bundled Streamlit configuration: no error details reach a browser, and only this computer is served."""

from __future__ import annotations

import tomllib

from .conftest import REPO


def test_bundled_config_hides_error_details_and_serves_only_this_computer() -> None:
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False
