"""The metrics endpoint over mutual TLS: it answers only a client whose certificate the client CA
signed; plain HTTP, TLS without a certificate and a stranger's certificate are all refused."""

from __future__ import annotations

import asyncio
import http.client
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis_server import free_port

from quantum_apply_layer.config import ConfigError, Settings, load_settings
from quantum_apply_layer.runtime import start_metrics_server
from quantum_apply_layer.stream_health import read_stream_health


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Path  # <name>.crt and <name>.key beside it
    client: Path
    stranger: Path  # signed by another CA


OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"


def _openssl(*args: str | Path) -> None:
    subprocess.run([OPENSSL, *map(str, args)], check=True, capture_output=True)


def _new_key(stem: Path, name: str) -> list[str]:
    curve = ["-pkeyopt", "ec_paramgen_curve:P-256"]
    return ["-newkey", "ec", *curve, "-nodes", "-keyout", f"{stem}.key", "-subj", f"/CN={name}"]


def _ca(directory: Path, name: str) -> Path:
    stem = directory / name
    _openssl("req", "-x509", *_new_key(stem, name), "-days", "2", "-out", f"{stem}.crt")
    return stem


def _signed(ca: Path, stem: Path, san: str) -> Path:
    _openssl("req", "-new", *_new_key(stem, stem.name), "-out", f"{stem}.csr")
    extensions = stem.with_suffix(".ext")
    extensions.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n", encoding="utf-8")
    ca_files = ["-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial"]
    signing = [*ca_files, "-days", "2", "-extfile", str(extensions)]
    _openssl("x509", "-req", "-in", f"{stem}.csr", *signing, "-out", f"{stem}.crt")
    return stem


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _ca(directory, "ca")
    return Pki(
        ca=Path(f"{ca}.crt"),
        server=_signed(ca, directory / "server", "IP:127.0.0.1"),
        client=_signed(ca, directory / "prometheus", "DNS:prometheus"),
        stranger=_signed(_ca(directory, "other-ca"), directory / "stranger", "DNS:stranger"),
    )


def _tls_env(pki: Pki) -> dict[str, str]:
    return {
        "APPLY_METRICS_TLS_CERT": f"{pki.server}.crt",
        "APPLY_METRICS_TLS_KEY": f"{pki.server}.key",
        "APPLY_METRICS_TLS_CLIENT_CA": str(pki.ca),
    }


@pytest.fixture(scope="module")
def served(pki: Pki) -> Iterator[Settings]:
    settings = load_settings(
        {"APPLY_METRICS_ADDR": "127.0.0.1", "APPLY_METRICS_PORT": str(free_port()), **_tls_env(pki)}
    )
    server = start_metrics_server(settings)
    yield settings
    server.shutdown()


def _scrape(settings: Settings, scheme: str, client: Path | None, pki: Pki) -> int:
    context = ssl.create_default_context(cafile=pki.ca)
    if client is not None:
        context.load_cert_chain(f"{client}.crt", f"{client}.key")
    url = f"{scheme}://127.0.0.1:{settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5, context=context if scheme == "https" else None) as response:  # noqa: S310
        return int(response.status)


def test_prometheus_with_its_client_certificate_scrapes(served: Settings, pki: Pki) -> None:
    assert _scrape(served, "https", pki.client, pki) == 200


@pytest.mark.parametrize(("scheme", "client"), [("http", None), ("https", None), ("https", "stranger")])
def test_anyone_else_is_refused(served: Settings, pki: Pki, scheme: str, client: str | None) -> None:
    with pytest.raises((OSError, http.client.HTTPException, urllib.error.URLError)):
        _scrape(served, scheme, getattr(pki, client) if client else None, pki)


def test_the_cli_reads_the_endpoint_with_the_service_own_certificate(served: Settings) -> None:
    assert asyncio.run(read_stream_health(served))["reachable"] is True


def test_a_missing_file_is_a_setting_error_naming_it(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"APPLY_METRICS_TLS_KEY='.*absent.key': cannot read it"):
        load_settings({**_tls_env(pki), "APPLY_METRICS_TLS_KEY": str(tmp_path / "absent.key")})


def test_a_relative_path_is_refused(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"APPLY_METRICS_TLS_CERT='server\.crt': accepted values"):
        load_settings({**_tls_env(pki), "APPLY_METRICS_TLS_CERT": "server.crt"})


@pytest.mark.parametrize("left_out", ["APPLY_METRICS_TLS_KEY", "APPLY_METRICS_TLS_CLIENT_CA"])
def test_tls_without_its_key_or_client_ca_is_refused(pki: Pki, left_out: str) -> None:
    env = {name: value for name, value in _tls_env(pki).items() if name != left_out}
    with pytest.raises(ConfigError, match=f"set without {left_out}: metrics over TLS need"):
        load_settings(env)
