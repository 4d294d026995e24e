"""The roles' filter plugins, loaded from their files as Ansible loads them (they are not a package)."""

import importlib.util
from pathlib import Path
from types import ModuleType

FILTER_PLUGINS = Path(__file__).resolve().parents[2] / "roles" / "apply_layer" / "filter_plugins"


def filter_plugin(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FILTER_PLUGINS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
