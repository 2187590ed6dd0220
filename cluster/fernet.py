"""The Fernet tokens of the peer port, made and read with less Python per message.

PySyncObj encrypts every peer message with cryptography's Fernet, keyed from the
cluster secret. Each token is base64-decoded and its HMAC checked twice on arrival
(PySyncObj reads the timestamp, then decrypts), and each side builds padding, HMAC
and cipher objects per message: about a quarter of a follower's CPU under writes.
This makes and reads the same tokens (cryptography's Fernet reads ours, we read its:
replicas of older releases interoperate), with the one-shot HMAC of the standard
library, padding by hand, and a token's check remembered until it is decrypted.

Token: base64url(0x80 | timestamp, 8 bytes | IV, 16 | AES-128-CBC ciphertext of the
PKCS7-padded data | HMAC-SHA256 of everything before it, 32).
"""

import base64
import binascii
import hmac
import os

from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj.encryptor import SALT

_VERSION = 0x80
_HEADER = 25  # version, timestamp, IV
_MAC = 32
_BLOCK = 16


def key_from_secret(secret: str) -> bytes:
    """The 32-byte key PySyncObj derives from the cluster secret (pysyncobj.encryptor)."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=SALT, iterations=100_000)
    return kdf.derive(secret.encode())


class Fernet:
    """What PySyncObj calls of cryptography's Fernet: encrypt_at_time, extract_timestamp
    and decrypt. The remembered check is one tuple, replaced whole: safe from any thread."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"a Fernet key is 32 bytes, not {len(key)}")
        self._signing_key = key[:16]
        self._aes = algorithms.AES(key[16:])
        self._checked: tuple[bytes | None, bytes] = (None, b"")

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        iv = os.urandom(16)
        pad = _BLOCK - len(data) % _BLOCK
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(data + bytes((pad,)) * pad) + encryptor.finalize()
        body = bytes((_VERSION,)) + current_time.to_bytes(8, "big") + iv + ciphertext
        return base64.urlsafe_b64encode(body + hmac.digest(self._signing_key, body, "sha256"))

    def extract_timestamp(self, token: bytes) -> int:
        return int.from_bytes(self._verified(token)[1:9], "big")

    def decrypt(self, token: bytes) -> bytes:
        data = self._verified(token)
        ciphertext = data[_HEADER:-_MAC]
        if not ciphertext or len(ciphertext) % _BLOCK:
            raise InvalidToken
        decryptor = Cipher(self._aes, modes.CBC(data[9:_HEADER])).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        pad = padded[-1]
        if not 1 <= pad <= _BLOCK or padded[-pad:] != bytes((pad,)) * pad:
            raise InvalidToken
        return padded[:-pad]

    def _verified(self, token: bytes) -> bytes:
        """The decoded token, once its HMAC is checked; the last one is remembered, as
        PySyncObj asks for the timestamp and then decrypts the same token object."""
        last, data = self._checked
        if token is last:
            return data
        try:
            data = base64.urlsafe_b64decode(token)
        except (TypeError, ValueError, binascii.Error):
            raise InvalidToken from None
        if len(data) < _HEADER + _BLOCK + _MAC or data[0] != _VERSION:
            raise InvalidToken
        expected = hmac.digest(self._signing_key, data[:-_MAC], "sha256")
        if not hmac.compare_digest(expected, data[-_MAC:]):
            raise InvalidToken
        self._checked = (token, data)
        return data
