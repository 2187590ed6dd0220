"""The peer port's cipher: what PySyncObj calls to encrypt and authenticate every
peer message, keyed from the cluster secret. Two formats, told apart by their first
byte; every replica reads both, and which one it writes follows the machine version
(`seal`), because replicas of older releases read only the first.

Fernet tokens, PySyncObj's own (cryptography's Fernet reads ours, we read its), made
and read with less Python: the one-shot HMAC of the standard library, padding by hand,
and a token's check remembered until it is decrypted (PySyncObj reads the timestamp,
then decrypts). Still about 26 us a message (base64, AES-CBC, HMAC):

    base64url(0x80 | timestamp, 8 | IV, 16 | AES-128-CBC of the PKCS7-padded data
              | HMAC-SHA256 of everything before it, 32)

Sealed messages, from machine version 5 (storage/versions.py): AES-256-GCM, one C
call each way, about 2 us a message. A sequential write through a follower crosses
about eight peer messages: with Fernet tokens they took about a sixth of the CPU the
three replicas spent on it.

    0x01 | salt, 16 | counter, 8 | timestamp, 8 | ciphertext | tag, 16

The header is authenticated data. Each cipher (one per run of a replica's Raft) draws
a random salt and seals under its own key, HMAC-SHA256(cluster key, label + salt), with
a counter as nonce: a nonce never repeats under a key, where random 96-bit nonces under
the cluster's one key would risk a repeat after about 2**32 messages (days, here).
"""

import base64
import binascii
import hmac
import itertools
import os

from cryptography.exceptions import InvalidTag
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj.encryptor import SALT

_VERSION = 0x80
_HEADER = 25  # version, timestamp, IV
_MAC = 32
_BLOCK = 16

_SEALED = b"\x01"
_SALT_END = 17
_COUNTER_END = 25
_SEALED_HEADER = 33  # marker, salt, counter, timestamp
_TAG = 16
_SEALING_LABEL = b"regraft sealed peer messages "
# Keys of the peers' current runs, remembered; a restart brings a new salt.
_OPENERS = 64


def key_from_secret(secret: str) -> bytes:
    """The 32-byte key PySyncObj derives from the cluster secret (pysyncobj.encryptor)."""
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=SALT, iterations=100_000)
    return kdf.derive(secret.encode())


class PeerCipher:
    """What PySyncObj calls of cryptography's Fernet: encrypt_at_time, extract_timestamp
    and decrypt. What is remembered between the last two is a tuple per format,
    replaced whole: safe from any thread."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError(f"a peer message key is 32 bytes, not {len(key)}")
        self._key = key
        self._signing_key = key[:16]
        self._aes = algorithms.AES(key[16:])
        self._checked: tuple[bytes | None, bytes] = (None, b"")
        # Written: sealed messages once every member reads them (set by cluster/raft.py).
        self.seal = False
        self._salt = os.urandom(16)
        self._sealer = AESGCM(self._sealing_key(self._salt))
        self._counter = itertools.count()
        self._openers: dict[bytes, AESGCM] = {}
        self._unsealed_last: tuple[bytes | None, tuple[int, bytes]] = (None, (0, b""))

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        if self.seal:
            counter = next(self._counter).to_bytes(8, "big")
            header = _SEALED + self._salt + counter + current_time.to_bytes(8, "big")
            return header + self._sealer.encrypt(counter + bytes(4), data, header)
        iv = os.urandom(16)
        pad = _BLOCK - len(data) % _BLOCK
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(data + bytes((pad,)) * pad) + encryptor.finalize()
        body = bytes((_VERSION,)) + current_time.to_bytes(8, "big") + iv + ciphertext
        return base64.urlsafe_b64encode(body + hmac.digest(self._signing_key, body, "sha256"))

    def extract_timestamp(self, token: bytes) -> int:
        if token[:1] == _SEALED:
            return self._unsealed(token)[0]
        return int.from_bytes(self._verified(token)[1:9], "big")

    def decrypt(self, token: bytes) -> bytes:
        if token[:1] == _SEALED:
            return self._unsealed(token)[1]
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

    def _sealing_key(self, salt: bytes) -> bytes:
        return hmac.digest(self._key, _SEALING_LABEL + salt, "sha256")

    def _unsealed(self, token: bytes) -> tuple[int, bytes]:
        """A sealed message's timestamp and data, once its tag is checked; the last one
        is remembered, as for Fernet tokens."""
        last, opened = self._unsealed_last
        if token is last:
            return opened
        if len(token) < _SEALED_HEADER + _TAG:
            raise InvalidToken
        salt = token[1:_SALT_END]
        opener = self._openers.get(salt)
        known = opener is not None
        if not known:
            opener = AESGCM(self._sealing_key(salt))
        header = token[:_SEALED_HEADER]
        try:
            data = opener.decrypt(
                token[_SALT_END:_COUNTER_END] + bytes(4), token[_SEALED_HEADER:], header
            )
        except InvalidTag:
            raise InvalidToken from None
        if not known:  # only a key that opened a message is kept
            if len(self._openers) >= _OPENERS:
                self._openers.clear()
            self._openers[salt] = opener
        opened = (int.from_bytes(header[_COUNTER_END:], "big"), data)
        self._unsealed_last = (token, opened)
        return opened
