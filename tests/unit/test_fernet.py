"""cluster/fernet.py makes and reads exactly the tokens of cryptography's Fernet."""

import base64
import hmac
import os

import pytest
from cryptography import fernet as reference
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj.encryptor import getEncryptor

from cluster import fernet

KEY = os.urandom(32)
theirs = reference.Fernet(base64.urlsafe_b64encode(KEY))
times = st.integers(0, 2**63 - 1)


@given(data=st.binary(max_size=300), now=times)
def test_the_reference_reads_our_tokens(data, now):
    token = fernet.Fernet(KEY).encrypt_at_time(data, now)
    assert theirs.extract_timestamp(token) == now
    assert theirs.decrypt(token) == data


@given(data=st.binary(max_size=300), now=times)
def test_we_read_the_references_tokens(data, now):
    token = theirs.encrypt_at_time(data, now)
    ours = fernet.Fernet(KEY)
    assert ours.extract_timestamp(token) == now
    assert ours.decrypt(token) == data
    assert fernet.Fernet(KEY).decrypt(token) == data  # without the timestamp first


def test_the_key_is_the_one_pysyncobj_derives_from_the_secret():
    token = getEncryptor("s3cret").encrypt_at_time(b"hello", 7)
    assert fernet.Fernet(fernet.key_from_secret("s3cret")).decrypt(token) == b"hello"
    with pytest.raises(reference.InvalidToken):
        fernet.Fernet(fernet.key_from_secret("other")).decrypt(token)


@given(data=st.binary(max_size=100), position=st.integers(0), bit=st.integers(0, 7))
def test_a_token_changed_anywhere_is_refused(data, position, bit):
    raw = bytearray(base64.urlsafe_b64decode(theirs.encrypt_at_time(data, 5)))
    raw[position % len(raw)] ^= 1 << bit
    token = base64.urlsafe_b64encode(bytes(raw))
    for read in (fernet.Fernet(KEY).extract_timestamp, fernet.Fernet(KEY).decrypt):
        with pytest.raises(reference.InvalidToken):
            read(token)


@pytest.mark.parametrize(
    "token",
    [b"", b"not base64 !", base64.urlsafe_b64encode(b"\x80" + bytes(40)), "text", None],
)
def test_malformed_tokens_are_refused(token):
    with pytest.raises((reference.InvalidToken, TypeError)):
        fernet.Fernet(KEY).decrypt(token)


def test_a_signed_token_with_bad_padding_is_refused():
    """Only a holder of the key can sign one; still, it must not decrypt to garbage."""
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(KEY[16:]), modes.CBC(iv)).encryptor()
    body = b"\x80" + bytes(8) + iv + encryptor.update(bytes(15) + b"\x11") + encryptor.finalize()
    token = base64.urlsafe_b64encode(body + hmac.digest(KEY[:16], body, "sha256"))
    with pytest.raises(reference.InvalidToken):
        fernet.Fernet(KEY).decrypt(token)


def test_a_key_of_the_wrong_length_is_refused_by_name():
    with pytest.raises(ValueError, match="32 bytes, not 16"):
        fernet.Fernet(bytes(16))
