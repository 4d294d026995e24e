"""The scenario's test files reach the helpers every scenario shares (molecule/shared, on PYTHONPATH from
.config/molecule/config.yml) through this conftest."""

from __future__ import annotations

from scenario_helpers import RELEASE_PYTHON, http_json, http_text, kill_switch_play, wait_for

__all__ = ["RELEASE_PYTHON", "http_json", "http_text", "kill_switch_play", "wait_for"]
