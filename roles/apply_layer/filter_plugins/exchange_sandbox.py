"""The sandbox rule, stated once, by the product: `url | apply_layer_is_sandbox_exchange` is true when the
exchange URL's host is one the apply layer accepts under TESTNET=true (quantum_apply_layer.config: the
testnet host or a loopback address). The role's preflight and the deploy's production check ask it, so an
inventory fails before any change for the same reason the service would refuse to start.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

# The bundle's own copy of the package, for a controller whose Python has not installed it.
PACKAGE_SOURCE = Path(__file__).resolve().parents[3] / "files/apply_layer_patch/src/quantum_apply_layer"


def _load_package_source() -> None:
    spec = importlib.util.spec_from_file_location(
        "quantum_apply_layer",
        PACKAGE_SOURCE / "__init__.py",
        submodule_search_locations=[str(PACKAGE_SOURCE)],
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"quantum_apply_layer is neither installed nor in {PACKAGE_SOURCE}")
    package = importlib.util.module_from_spec(spec)
    sys.modules["quantum_apply_layer"] = package
    spec.loader.exec_module(package)


def _product_config() -> ModuleType:
    """The controller's installed package (the project's .venv), else the bundle's own copy."""
    try:
        return importlib.import_module("quantum_apply_layer.config")
    except ImportError:
        _load_package_source()
        return importlib.import_module("quantum_apply_layer.config")


def is_sandbox_exchange(url: str) -> bool:
    config = _product_config()
    host = urlsplit(url).hostname or ""
    return host in config.SANDBOX_HOSTS or bool(config.is_loopback_host(host))


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"apply_layer_is_sandbox_exchange": is_sandbox_exchange}
