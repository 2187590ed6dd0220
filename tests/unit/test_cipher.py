"""cluster/cipher.py makes and reads exactly the tokens of cryptography's Fernet, and
seals and opens its own messages, refusing any it did not seal under the same key."""

import base64
import hmac
import os

import pytest
from cryptography import fernet as reference
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj.encryptor import getEncryptor

from cluster import cipher

KEY = os.urandom(32)
theirs = reference.Fernet(base64.urlsafe_b64encode(KEY))
times = st.integers(0, 2**63 - 1)


@given(data=st.binary(max_size=300), now=times)
def test_the_reference_reads_our_tokens(data, now):
    token = cipher.PeerCipher(KEY).encrypt_at_time(data, now)
    assert theirs.extract_timestamp(token) == now
    assert theirs.decrypt(token) == data


@given(data=st.binary(max_size=300), now=times)
def test_we_read_the_references_tokens(data, now):
    token = theirs.encrypt_at_time(data, now)
    ours = cipher.PeerCipher(KEY)
    assert ours.extract_timestamp(token) == now
    assert ours.decrypt(token) == data
    assert cipher.PeerCipher(KEY).decrypt(token) == data  # without the timestamp first


def test_the_key_is_the_one_pysyncobj_derives_from_the_secret():
    token = getEncryptor("s3cret").encrypt_at_time(b"hello", 7)
    assert cipher.PeerCipher(cipher.key_from_secret("s3cret")).decrypt(token) == b"hello"
    with pytest.raises(reference.InvalidToken):
        cipher.PeerCipher(cipher.key_from_secret("other")).decrypt(token)


@given(data=st.binary(max_size=100), position=st.integers(0), bit=st.integers(0, 7))
def test_a_token_changed_anywhere_is_refused(data, position, bit):
    raw = bytearray(base64.urlsafe_b64decode(theirs.encrypt_at_time(data, 5)))
    raw[position % len(raw)] ^= 1 << bit
    token = base64.urlsafe_b64encode(bytes(raw))
    for read in (cipher.PeerCipher(KEY).extract_timestamp, cipher.PeerCipher(KEY).decrypt):
        with pytest.raises(reference.InvalidToken):
            read(token)


@pytest.mark.parametrize(
    "token",
    [b"", b"not base64 !", base64.urlsafe_b64encode(b"\x80" + bytes(40)), "text", None],
)
def test_malformed_tokens_are_refused(token):
    with pytest.raises((reference.InvalidToken, TypeError)):
        cipher.PeerCipher(KEY).decrypt(token)


def test_a_signed_token_with_bad_padding_is_refused():
    """Only a holder of the key can sign one; still, it must not decrypt to garbage."""
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(KEY[16:]), modes.CBC(iv)).encryptor()
    body = b"\x80" + bytes(8) + iv + encryptor.update(bytes(15) + b"\x11") + encryptor.finalize()
    token = base64.urlsafe_b64encode(body + hmac.digest(KEY[:16], body, "sha256"))
    with pytest.raises(reference.InvalidToken):
        cipher.PeerCipher(KEY).decrypt(token)


def test_a_key_of_the_wrong_length_is_refused_by_name():
    with pytest.raises(ValueError, match="key is 32 bytes, not 16"):
        cipher.PeerCipher(bytes(16))


def sealing(key: bytes = KEY) -> cipher.PeerCipher:
    sealer = cipher.PeerCipher(key)
    sealer.seal = True
    return sealer


@given(data=st.binary(min_size=1, max_size=300), now=times)
def test_sealed_messages_open_with_the_same_key_in_any_cipher(data, now):
    message = sealing().encrypt_at_time(data, now)
    assert message[:1] == b"\x01"
    assert len(message) == 33 + len(data) + 16
    reader = cipher.PeerCipher(KEY)  # reads sealed messages whatever it writes
    assert reader.extract_timestamp(message) == now
    assert reader.decrypt(message) == data
    assert cipher.PeerCipher(KEY).decrypt(message) == data  # without the timestamp first


@given(data=st.binary(max_size=100), now=times)
def test_a_sealing_cipher_still_reads_fernet_tokens(data, now):
    """A member that switched reads what one that has not applied the switch yet sends."""
    assert sealing().decrypt(theirs.encrypt_at_time(data, now)) == data


def test_nonces_never_repeat_under_one_key():
    """Each cipher seals under a key of its own (its salt) with a counter as nonce."""
    first, second = sealing(), sealing()
    headers = [first.encrypt_at_time(b"x", 1)[1:25] for _ in range(1000)]
    headers += [second.encrypt_at_time(b"x", 1)[1:25] for _ in range(1000)]
    assert len(set(headers)) == 2000
    assert {h[:16] for h in headers} == {first._salt, second._salt}


@given(data=st.binary(max_size=100), position=st.integers(0), bit=st.integers(0, 7))
def test_a_sealed_message_changed_anywhere_is_refused(data, position, bit):
    raw = bytearray(sealing().encrypt_at_time(data, 5))
    raw[position % len(raw)] ^= 1 << bit
    for read in (cipher.PeerCipher(KEY).extract_timestamp, cipher.PeerCipher(KEY).decrypt):
        with pytest.raises(reference.InvalidToken):
            read(bytes(raw))


def test_sealed_messages_need_the_clusters_key():
    message = sealing().encrypt_at_time(b"append_entries", 9)
    with pytest.raises(reference.InvalidToken):
        cipher.PeerCipher(os.urandom(32)).decrypt(message)
    with pytest.raises(reference.InvalidToken):
        cipher.PeerCipher(KEY).decrypt(message[:40])  # shorter than a header and a tag


def test_only_keys_that_opened_a_message_are_remembered():
    """Garbage with random salts must not grow a reader's memory, nor restarted peers."""
    reader = cipher.PeerCipher(KEY)
    for _ in range(200):
        with pytest.raises(reference.InvalidToken):
            reader.decrypt(b"\x01" + os.urandom(80))
    assert reader._openers == {}
    for _ in range(200):
        assert reader.decrypt(sealing().encrypt_at_time(b"m", 1)) == b"m"
    assert 0 < len(reader._openers) <= 64
