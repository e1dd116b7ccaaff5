"""The local cluster's PKI, made per run: a CA, the API server's serving certificate, client certificates, and the
service-account signing key. RSA 2048 and one day of validity: these are throw-away test credentials."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=1)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class Pki:
    """``Pki(directory)`` makes ``ca.crt``/``ca.key`` there; ``issue()`` signs leaf certificates with it."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        name = _name("stackrox-prefetch-test-ca")
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = self.dir / "ca.crt"
        self.ca_key_path = self.dir / "ca.key"
        self.ca_path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self.ca_key, self.ca_key_path)

    @classmethod
    def load(cls, directory: Path) -> Pki:
        """The CA that ``Pki(directory)`` made earlier (``ca.crt``, ``ca.key``), to issue more certificates from it
        in another process (cluster.json's ``ca_path`` is ``directory / "ca.crt"``)."""
        pki = cls.__new__(cls)
        pki.dir = directory
        pki.ca_path, pki.ca_key_path = directory / "ca.crt", directory / "ca.key"
        pki.ca_cert = x509.load_pem_x509_certificate(pki.ca_path.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        pki.ca_key = key
        return pki

    def issue(self, stem: str, common_name: str, organizations: tuple[str, ...] = (), server: bool = False,
              ips: tuple[str, ...] = (), dns: tuple[str, ...] = (), out_dir: Optional[Path] = None
              ) -> tuple[Path, Path]:
        """Writes ``<stem>.crt`` and ``<stem>.key`` (into ``out_dir``, default the CA's directory); returns their
        paths."""
        key = _key()
        now = datetime.datetime.now(datetime.timezone.utc)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name, organizations))
            .issuer_name(self.ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        alt_names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        alt_names += [x509.DNSName(name) for name in dns]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        where = out_dir or self.dir
        cert_path, key_path = where / f"{stem}.crt", where / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path

    def service_account_keys(self) -> tuple[Path, Path]:
        """The key pair the API server signs and checks service-account tokens with: (private, public)."""
        key = _key()
        private, public = self.dir / "sa.key", self.dir / "sa.pub"
        _write_key(key, private)
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
        return private, public


def kubeconfig(path: Path, server: str, ca_path: Path, user: str, token: Optional[str] = None,
               cert: Optional[tuple[Path, Path]] = None, cluster: str = "local") -> Path:
    """A one-context kubeconfig (token or client certificate), as kubectl and the kubernetes client read it."""
    import yaml

    credentials: dict[str, str] = {}
    if token is not None:
        credentials["token"] = token
    if cert is not None:
        credentials["client-certificate"], credentials["client-key"] = str(cert[0]), str(cert[1])
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": cluster, "preferences": {},
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca_path)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path
