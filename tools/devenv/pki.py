"""Certificates and keys for the local cluster, made with the openssl command.

The API server only serves TLS, authenticates clients by certificate or token, and signs
ServiceAccount tokens (later issues authenticate the operator as its own ServiceAccount, so the
real authorizer enforces our RBAC). Everything is made once and kept in the state folder.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devenv import paths

DAYS = "3650"
FRONT_PROXY_CLIENT = "front-proxy-client"


class PkiError(RuntimeError):
    pass


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def front_proxy_crt(self) -> Path:
        """The API server's client certificate when it proxies to an aggregated API."""
        return self.dir / "front-proxy-client.crt"

    @property
    def front_proxy_key(self) -> Path:
        return self.dir / "front-proxy-client.key"

    @property
    def metrics_server_crt(self) -> Path:
        return self.dir / "metrics-server.crt"

    @property
    def metrics_server_key(self) -> Path:
        return self.dir / "metrics-server.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    try:
        result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise PkiError("the 'openssl' command is missing (Debian package openssl)") from exc
    if result.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {result.stderr.decode().strip()}")
    return result.stdout


def _ec_key(path: Path) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path))
    path.chmod(0o600)


def _signed(pki: Pki, key: Path, crt: Path, subject: str, extensions: str) -> None:
    _ec_key(key)
    csr = _openssl("req", "-new", "-key", str(key), "-subj", subject)
    with tempfile.NamedTemporaryFile("w", suffix=".ext") as ext:
        ext.write(extensions)
        ext.flush()
        # -set_serial with a fresh value keeps openssl from writing a serial file next to the CA.
        serial = "0x" + os.urandom(8).hex()
        crt.write_bytes(
            _openssl(
                "x509",
                "-req",
                "-CA",
                str(pki.ca_crt),
                "-CAkey",
                str(pki.ca_key),
                "-set_serial",
                serial,
                "-days",
                DAYS,
                "-extfile",
                ext.name,
                stdin=csr,
            )
        )


def ensure(directory: Path | None = None) -> Pki:
    """Create the CA, the API server's serving certificate, an admin client, the aggregation
    layer's client and metrics-server's serving certificate, and the SA keys."""
    pki = Pki(directory or paths.STATE_DIR / "pki")
    pki.dir.mkdir(parents=True, exist_ok=True)
    if not (pki.ca_crt.exists() and pki.ca_key.exists()):
        _ec_key(pki.ca_key)
        pki.ca_crt.write_bytes(
            _openssl(
                "req",
                "-x509",
                "-new",
                "-key",
                str(pki.ca_key),
                "-days",
                DAYS,
                "-subj",
                "/CN=coalmine-local-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            )
        )
    if not pki.apiserver_crt.exists():
        sans = ",".join(
            [
                "DNS:localhost",
                "DNS:kubernetes",
                "DNS:kubernetes.default",
                "DNS:kubernetes.default.svc",
                "DNS:kubernetes.default.svc.cluster.local",
                "IP:127.0.0.1",
                f"IP:{paths.ADVERTISE_ADDRESS}",
                "IP:10.96.0.1",
            ]
        )
        _signed(
            pki,
            pki.apiserver_key,
            pki.apiserver_crt,
            "/CN=kube-apiserver",
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n",
        )
    if not pki.admin_crt.exists():
        _signed(
            pki,
            pki.admin_key,
            pki.admin_crt,
            "/O=system:masters/CN=coalmine-admin",
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        )
    if not pki.front_proxy_crt.exists():
        # Aggregated APIs trust the user the API server names in its headers only from this
        # client (the API server's --requestheader-allowed-names).
        _signed(
            pki,
            pki.front_proxy_key,
            pki.front_proxy_crt,
            f"/CN={FRONT_PROXY_CLIENT}",
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        )
    if not pki.metrics_server_crt.exists():
        # The API server checks it as <service>.<namespace>.svc, whatever address it dials.
        sans = "DNS:metrics-server.kube-system.svc,IP:127.0.0.1"
        _signed(
            pki,
            pki.metrics_server_key,
            pki.metrics_server_crt,
            "/CN=metrics-server",
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n",
        )
    if not (pki.sa_key.exists() and pki.sa_pub.exists()):
        _ec_key(pki.sa_key)
        pki.sa_pub.write_bytes(_openssl("ec", "-in", str(pki.sa_key), "-pubout"))
    return pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(pki: Pki, target: Path, server: str = paths.API_SERVER_URL) -> None:
    """A self-contained kubeconfig (data embedded) for the cluster administrator."""
    target.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: coalmine-local
  cluster:
    server: {server}
    certificate-authority-data: {_b64(pki.ca_crt)}
users:
- name: coalmine-admin
  user:
    client-certificate-data: {_b64(pki.admin_crt)}
    client-key-data: {_b64(pki.admin_key)}
contexts:
- name: coalmine-local
  context:
    cluster: coalmine-local
    user: coalmine-admin
current-context: coalmine-local
"""
    )
    target.chmod(0o600)
