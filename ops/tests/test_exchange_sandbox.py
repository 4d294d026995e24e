"""roles/apply_layer/filter_plugins/exchange_sandbox.py states the sandbox rule the way the product does:
for every URL, the filter says "sandbox" exactly when the service accepts it with TESTNET=true."""

import subprocess
import sys

import pytest
from quantum_apply_layer.config import ConfigError, load_settings
from role_plugins import FILTER_PLUGINS, filter_plugin

exchange_sandbox = filter_plugin("exchange_sandbox")
is_sandbox_exchange = exchange_sandbox.is_sandbox_exchange

SANDBOXES = [
    "https://testnet.binancefuture.com",
    "http://127.0.0.1:8090",
    "http://127.5.6.7:8090/",
    "http://localhost:8090",
    "http://[::1]:8090",
]
NOT_SANDBOXES = [
    "https://fapi.binance.com",
    "https://127.evil.example",
    "https://testnet.binancefuture.com.evil.example",
    "https://10.0.0.5:8443",
]


def accepted_on_testnet(url: str) -> bool:
    try:
        load_settings({"TESTNET": "true", "APPLY_EXCHANGE_URL": url})
    except ConfigError:
        return False
    return True


def test_the_filter_is_registered_under_the_role_prefix() -> None:
    assert exchange_sandbox.FilterModule().filters() == {
        "apply_layer_is_sandbox_exchange": is_sandbox_exchange
    }


@pytest.mark.parametrize("url", SANDBOXES)
def test_a_sandbox_is_one(url: str) -> None:
    assert is_sandbox_exchange(url)


@pytest.mark.parametrize("url", NOT_SANDBOXES)
def test_anything_else_is_not(url: str) -> None:
    assert not is_sandbox_exchange(url)


@pytest.mark.parametrize("url", SANDBOXES + NOT_SANDBOXES)
def test_the_filter_and_the_service_agree(url: str) -> None:
    assert is_sandbox_exchange(url) == accepted_on_testnet(url)


def test_a_controller_without_the_package_installed_reads_the_bundles_copy() -> None:
    """python -S: no site-packages, so no installed quantum_apply_layer; the plugin finds files/ itself."""
    script = (
        "import runpy, sys\n"
        "assert 'quantum_apply_layer' not in sys.modules\n"
        f"plugin = runpy.run_path({str(FILTER_PLUGINS / 'exchange_sandbox.py')!r})\n"
        "print(plugin['is_sandbox_exchange']('http://127.0.0.1:8090'),"
        " plugin['is_sandbox_exchange']('https://fapi.binance.com'))\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "False"]
