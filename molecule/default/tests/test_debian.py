"""The container is Debian 13, the stable a newcomer's VPS comes with, and the stack lives on it cleanly."""

from testinfra.host import Host

RELEASE_PYTHON = "/opt/quantum/apply-layer/current/venv/bin/python"
# The compiled packages of the lock: each imports only from a wheel built for the venv's Python.
COMPILED = (
    "aiohttp, cffi, charset_normalizer, coincurve, frozenlist, multidict, orjson, propcache, uvloop, yarl"
)


def test_the_host_runs_debian_13(host: Host) -> None:
    assert host.file("/etc/debian_version").content_string.startswith("13.")


def test_systemd_boots_clean_not_degraded(host: Host) -> None:
    # systemd 257 counts a failed systemd-modules-load (no kmod) as degraded.
    assert host.run("systemctl is-system-running").stdout.strip() == "running"


def test_the_release_runs_on_the_hosts_python_3_13(host: Host) -> None:
    version = host.check_output("%s -c %s", RELEASE_PYTHON, "import sys; print(sys.version_info[:2])")
    assert version == "(3, 13)"
    host.check_output("%s -c %s", RELEASE_PYTHON, f"import {COMPILED}")
