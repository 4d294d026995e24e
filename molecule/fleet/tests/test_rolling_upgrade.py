"""A fleet halfway through its upgrade from Debian 12 to 13: one release serves both apply hosts, each from
the wheels for its own Python."""

from conftest import CORE, RELEASE_PYTHON
from testinfra.host import Host

RELEASE_LINK = "/opt/quantum/apply-layer/current"
DEBIAN_OF = {CORE: "13.", "qh-fleet-apply-1": "13.", "qh-fleet-apply-2": "12."}
PYTHON_OF = {"qh-fleet-apply-1": "(3, 13)", "qh-fleet-apply-2": "(3, 11)"}


def test_the_hosts_run_both_releases(core: Host, apply_hosts: dict[str, Host]) -> None:
    for name, host in {CORE: core, **apply_hosts}.items():
        assert host.file("/etc/debian_version").content_string.startswith(DEBIAN_OF[name]), name


def test_one_release_runs_on_each_hosts_own_python(apply_hosts: dict[str, Host]) -> None:
    releases = {host.file(RELEASE_LINK).linked_to for host in apply_hosts.values()}
    assert len(releases) == 1, releases
    for name, host in apply_hosts.items():
        version = host.check_output("%s -c %s", RELEASE_PYTHON, "import sys; print(sys.version_info[:2])")
        assert version == PYTHON_OF[name]
        # A compiled dependency, so the wheel is the one for this Python.
        host.check_output("%s -c %s", RELEASE_PYTHON, "import aiohttp, orjson, uvloop")
