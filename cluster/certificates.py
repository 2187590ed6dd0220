"""Certificates for the gRPC API's mutual TLS, for operators without a PKI of their own
(`regraft certs`, README Security).

A directory holds a certificate authority (ca.pem, and its key ca.key, readable by
its owner only) and the certificates it issued (NAME.pem, NAME.key). A replica's
certificate names the hosts it is reached at (its SANs); a caller's certificate names
the caller (its CN, looked up in the callers file). Every certificate may serve and
call: replicas call each other's API with theirs. Keys are ECDSA P-256.
"""

import contextlib
import datetime
import ipaddress
import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.config import ConfigError

CA_CERT, CA_KEY = "ca.pem", "ca.key"
# A common name that is also a file name: no path separators, no spaces.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Issued:
    cert_file: str
    key_file: str


class Authority:
    """A certificate authority whose files live in `directory`."""

    def __init__(self, directory: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = directory
        self.ca_file = os.path.join(directory, CA_CERT)
        self._cert = cert
        self._key = key

    @classmethod
    def create(cls, directory: str, name: str = "regraft CA", days: int = 3650) -> "Authority":
        """A new CA in `directory`; refused if one is there (its certificates would no
        longer verify)."""
        _check_days(days)
        for file in (CA_CERT, CA_KEY):
            path = os.path.join(directory, file)
            if os.path.exists(path):
                raise ConfigError(
                    f"{path} exists: {directory} already holds a CA. Issue with it, or "
                    "remove it to start over (what it issued will no longer verify)"
                )
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        write_files(
            [
                (os.path.join(directory, CA_KEY), _private_bytes(key), 0o600),
                (os.path.join(directory, CA_CERT), pem, 0o644),
            ]
        )
        return cls(directory, cert, key)

    @classmethod
    def load(cls, directory: str) -> "Authority":
        """The CA that `create` made in `directory`."""
        cert_path, key_path = (os.path.join(directory, f) for f in (CA_CERT, CA_KEY))
        try:
            with open(cert_path, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
            with open(key_path, "rb") as f:
                key = serialization.load_pem_private_key(f.read(), password=None)
        except FileNotFoundError as e:
            raise ConfigError(
                f"{e.filename} does not exist: make a CA first (regraft certs init {directory})"
            ) from None
        except OSError as e:
            raise ConfigError(f"cannot read {e.filename}: {e.strerror}") from None
        except (ValueError, TypeError) as e:  # TypeError: a key with a password
            raise ConfigError(f"{directory} does not hold a CA made by regraft: {e}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an ECDSA key")
        return cls(directory, cert, key)

    def issue(
        self,
        name: str,
        hosts: list[str] | tuple[str, ...] = (),
        days: int = 365,
        start: datetime.datetime | None = None,
        file_name: str = "",
        first: list[tuple[str, bytes, int]] | None = None,
    ) -> Issued:
        """A certificate for `name` (its CN), valid for `hosts` (DNS names, `*.`
        wildcards, IP addresses) from `start` (an hour ago) for `days`; written, key
        first, as NAME.pem and NAME.key (or `file_name`), replacing any before. Files in
        `first` (path, data, mode) are written with them and renamed into place before
        them; nothing is written unless every argument is valid."""
        check_name(name)
        if (file_name or name) == os.path.splitext(CA_CERT)[0]:
            raise ConfigError(
                f"certificate name {name!r} would replace the CA's own files: choose another"
            )
        _check_days(days)
        names = [host_name(host) for host in hosts]
        begin = start or datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
        end = begin + datetime.timedelta(days=days)
        if end > self._cert.not_valid_after_utc:
            raise ConfigError(
                f"--days {days} outlasts the CA, valid until "
                f"{self._cert.not_valid_after_utc:%Y-%m-%d}: issue for fewer days"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(begin)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(_key_usage(signs_certificates=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        base = os.path.join(self.directory, file_name or name)
        issued = Issued(base + ".pem", base + ".key")
        pem = cert.public_bytes(serialization.Encoding.PEM)
        files = [(issued.key_file, _private_bytes(key), 0o600), (issued.cert_file, pem, 0o644)]
        write_files([*(first or []), *files])
        return issued


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"certificate name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', "
            "beginning with a letter or digit (it is the CN and the file name)"
        )
    return name


def host_name(host: str) -> x509.GeneralName:
    """A SAN for `host`: an IP address, or a DNS name (its first label may be `*` when
    two or more follow)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if getattr(address, "scope_id", None):
            raise ConfigError(f"host {host!r}: a certificate cannot name an address's zone")
        return x509.IPAddress(address)
    labels = host.split(".")
    if labels[-1].isdigit():
        raise ConfigError(
            f"host {host!r} is neither an IP address nor a DNS name (a name's last label "
            "is not all digits)"
        )
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
        if len(labels) < 2:
            raise ConfigError(
                f"host {host!r}: TLS clients refuse a wildcard over a single label; "
                "name each host instead"
            )
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(
            f"host {host!r} is neither an IP address nor a DNS name (letters, digits and "
            "'-' in dot-separated labels; the first may be '*')"
        )
    return x509.DNSName(host)


def _check_days(days: int) -> None:
    if not 1 <= days <= 36500:
        raise ConfigError(f"--days {days} is not from 1 to 36500")


def _key_usage(signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _private_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_files(files: list[tuple[str, bytes, int]]) -> None:
    """Write each (path, data, mode) beside its path, then rename them into place in
    order: a failure is said with the path and replaces nothing. A file is readable
    by its owner only until it is complete, and a file replaced keeps its owner where
    this process may give it (a key chowned to the replica's user stays readable to
    it). A replica re-reading its files never sees half of one, and uses a new
    certificate once its key matches. A symbolic link is followed, not replaced."""
    written = []
    try:
        for path, data, mode in files:
            target = os.path.realpath(path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            temporary = target + ".tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)  # left by a crash, maybe with looser permissions
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            written.append((temporary, target))
            with open(descriptor, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if os.path.exists(target):
                before = os.stat(target)
                with contextlib.suppress(PermissionError):
                    os.chown(temporary, before.st_uid, before.st_gid)
            os.chmod(temporary, mode)
        for temporary, target in written:
            os.replace(temporary, target)
    except OSError as e:
        for temporary, _ in written:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise ConfigError(f"cannot write {e.filename or files[0][0]}: {e.strerror}") from None
