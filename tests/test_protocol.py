"""Unit tests of common/protocol.py: names and framing, over real socket pairs."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, settings, strategies as st

from common import protocol
from common.protocol import (Channel, ConnectionClosed, ConnectionLost, InvalidName, LineTooLong,
                             ProtocolError, decode_name, encode_name, parse_decimal, validate_name)

valid_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x7f") \
    .filter(lambda c: ord(c) >= 0x20)
valid_names = st.text(valid_chars, min_size=1, max_size=60) \
    .filter(lambda n: not n.startswith(".") and len(n.encode("utf-8")) <= 255)


@given(valid_names)
def test_any_valid_name_survives_encode_decode(name):
    encoded = encode_name(name)
    assert " " not in encoded and "\n" not in encoded and "\r" not in encoded
    assert decode_name(encoded) == name
    assert decode_name(encoded.encode("utf-8")) == name


@given(st.binary(min_size=0, max_size=80))
def test_a_decoded_name_that_passes_has_no_slash_control_or_leading_dot(raw):
    token = b"".join(b"%%%02x" % b for b in raw)  # every byte percent-encoded
    try:
        name = decode_name(token)
    except InvalidName:
        return
    data = name.encode("utf-8")
    assert b"/" not in data
    assert not any(b < 0x20 or b == 0x7F for b in data)
    assert not data.startswith(b".")
    assert 1 <= len(data) <= 255


@pytest.mark.parametrize("token, expected", [
    (b"report.pdf", "report.pdf"),
    (b"my%20notes.txt", "my notes.txt"),
    (b"r%C3%A9sum%C3%A9.pdf", "résumé.pdf"),
    (b"r%c3%a9sum%c3%a9.pdf", "résumé.pdf"),
    ("résumé.pdf".encode(), "résumé.pdf"),
    (b"100%25", "100%"),
    (b"%41bc", "Abc"),
])
def test_decode_examples(token, expected):
    assert decode_name(token) == expected


@pytest.mark.parametrize("token", [
    b"../x", b"..%2Fx", b"%2e%2e", b"a/b", b"a%2Fb", b".hidden", b"%2Ehidden", b"a%00b",
    b"a%0Ab", b"a%7F", b"a%1Fb", b"x" * 256, b"%", b"ab%2", b"ab%zz", b"%C3", b"\xff\xfe",
    b"", b"/etc/passwd",
])
def test_invalid_names_are_refused(token):
    with pytest.raises(InvalidName):
        decode_name(token)


def test_encode_writes_what_a_sender_must():
    assert encode_name("a b%c\td\x7f") == "a%20b%25c%09d%7F"
    assert encode_name("日本語.txt") == "日本語.txt"
    assert validate_name("x" * 255) == "x" * 255


@pytest.mark.parametrize("text", ["+5", "-1", " 5", "5 ", "1_000", "0x10", "", "٣", "1.5"])
def test_parse_decimal_accepts_ascii_digits_only(text):
    with pytest.raises(ProtocolError):
        parse_decimal(text, "size")


def test_parse_decimal():
    assert parse_decimal(b"0", "size") == 0
    assert parse_decimal("007", "size") == 7
    assert parse_decimal("0" * 4000 + "9", "size") == 9
    assert parse_decimal("1" * 20, "size") == int("1" * 20)  # a decimal, if a large one


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    yield Channel(left), right
    left.close()
    right.close()


def test_lines_split_anywhere_are_reassembled(pair):
    channel, peer = pair
    for piece in (b"LI", b"ST\r", b"\nGET a", b"\n", b"NOOP\nQUIT\n"):
        peer.sendall(piece)
    assert [channel.read_line() for _ in range(4)] == [b"LIST", b"GET a", b"NOOP", b"QUIT"]


def test_line_limit_is_4096_bytes_with_the_lf(pair):
    channel, peer = pair
    peer.sendall(b"x" * (protocol.MAX_LINE - 1) + b"\n")
    assert len(channel.read_line()) == protocol.MAX_LINE - 1
    peer.sendall(b"y" * protocol.MAX_LINE + b"\n")
    with pytest.raises(LineTooLong):
        channel.read_line()


def test_line_without_end_is_too_long_without_waiting_for_more(pair):
    channel, peer = pair
    peer.sendall(b"z" * (protocol.MAX_LINE + 10))
    with pytest.raises(LineTooLong):
        channel.read_line()


def test_clean_eof_and_eof_in_a_line_are_distinct(pair):
    channel, peer = pair
    peer.sendall(b"half")
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionLost):
        channel.read_line()
    other_left, other_right = socket.socketpair()
    try:
        other_right.close()
        with pytest.raises(ConnectionClosed):
            Channel(other_left).read_line()
    finally:
        other_left.close()


def test_exact_payload_after_a_line_in_the_same_segment(pair):
    channel, peer = pair
    payload = bytes(range(256)) * 5000
    peer.sendall(b"OK %d\n" % len(payload) + payload[:100])
    assert channel.read_line() == b"OK %d" % len(payload)
    sender = threading.Thread(target=peer.sendall, args=(payload[100:] + b"NEXT\n",))
    sender.start()
    received = bytearray()
    seen = []
    channel.read_exact_into(received.extend, len(payload), progress=seen.append)
    sender.join()
    assert bytes(received) == payload
    assert seen[-1] == len(payload)
    assert channel.read_line() == b"NEXT"


def test_short_payload_is_connection_lost(pair):
    channel, peer = pair
    peer.sendall(b"abc")
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionLost):
        channel.read_exact_into(lambda view: None, 10)


def test_cancel_is_checked_between_chunks(pair):
    channel, peer = pair
    peer.sendall(b"x" * 10)
    with pytest.raises(protocol.Cancelled):
        channel.read_exact_into(lambda view: None, 1 << 30, cancel=lambda: True)


def test_send_file_frames_exactly(pair, tmp_path):
    channel, peer = pair
    path = tmp_path / "data"
    path.write_bytes(b"0123456789" * 1000)
    with open(path, "rb") as handle:
        sender = threading.Thread(target=channel.send_file, args=(handle, 5, 9995))
        sender.start()
        received = b""
        while len(received) < 9995:
            received += peer.recv(65536)
        sender.join()
    assert received == (b"0123456789" * 1000)[5:]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300).filter(lambda b: b"\n" not in b),
                min_size=1, max_size=10),
       st.integers(min_value=1, max_value=50))
def test_any_split_of_lines_reads_back(lines, split):
    left, right = socket.socketpair()
    try:
        left.settimeout(5)
        stream = b"".join(line + b"\n" for line in lines)
        for start in range(0, len(stream), split):
            right.sendall(stream[start:start + split])
        channel = Channel(left)
        expected = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        assert [channel.read_line() for _ in lines] == expected
    finally:
        left.close()
        right.close()


# -- paths, tokens, replies (version 2) ----------------------------------------------

@given(st.lists(valid_names, min_size=1, max_size=6))
def test_any_valid_path_survives_encode_decode(segments):
    from common.protocol import decode_path, encode_path
    if sum(len(s.encode("utf-8")) for s in segments) + len(segments) - 1 > 1024:
        with pytest.raises(InvalidName):
            encode_path(segments)
        return
    encoded = encode_path(segments)
    assert " " not in encoded and "\n" not in encoded
    assert encoded.count("/") == len(segments) - 1  # a "/" inside a name is never raw
    assert decode_path(encoded) == tuple(segments)
    assert decode_path(encoded.encode("utf-8")) == tuple(segments)


@pytest.mark.parametrize("token, expected", [
    ("/", ()),
    ("a", ("a",)),
    ("a/b%20c", ("a", "b c")),
    ("%C3%A9t%C3%A9/x", ("été", "x")),
])
def test_decode_path_examples(token, expected):
    from common.protocol import decode_path
    assert decode_path(token) == expected


@pytest.mark.parametrize("token", ["", "/a", "a/", "a//b", "a/%2F", "a%2Fb", "a/../b", "a/./b",
                                   "a/.hidden", "%zz/a", "a/%2", "/".join(["x"] * 513),
                                   "a/" + "y" * 256])
def test_invalid_paths_are_refused(token):
    from common.protocol import decode_path
    with pytest.raises(InvalidName):
        decode_path(token)


def test_split_path_forgives_one_leading_and_trailing_slash_only():
    from common.protocol import split_path
    assert split_path("") == () and split_path("/") == ()
    assert split_path("/photos/2026/") == ("photos", "2026")
    for bad in ("a//b", "../etc", "a/.x"):
        with pytest.raises(InvalidName):
            split_path(bad)


@pytest.mark.parametrize("token, valid", [("abc_XYZ-09", True), ("a" * 64, True),
                                          ("a" * 65, False), ("", False), ("a b", False),
                                          ("a/b", False), ("é", False), ("a.b", False)])
def test_tokens(token, valid):
    from common.protocol import parse_token
    if valid:
        assert parse_token(token, "version") == token
    else:
        with pytest.raises(ProtocolError):
            parse_token(token, "version")


def test_greeting_and_failure_parsing():
    from common.protocol import parse_greeting, split_failure
    assert parse_greeting("READY shelf/2") == frozenset()
    assert parse_greeting("READY shelf/2 login tls future-thing") == {"login", "tls",
                                                                       "future-thing"}
    assert parse_greeting("READY shelf/1") is None
    assert parse_greeting("READY shelf/20") is None
    assert split_failure("notfound no such file") == ("notfound", "no such file")
    assert split_failure("toolong line too long") == ("toolong", "line too long")
    assert split_failure("mystery code") == ("io", "mystery code")  # unknown codes are io


# -- zero-copy is a property of each channel ------------------------------------------------

class WrappedSocket(socket.socket):
    """A socket subclass, as ssl.SSLSocket is: its bytes are not the file's bytes."""


def test_zero_copy_is_on_for_plain_sockets_and_off_for_wrapped_ones():
    left, right = socket.socketpair()
    wrapped = WrappedSocket(fileno=left.detach())
    try:
        assert Channel(right).zero_copy is True
        assert Channel(wrapped).zero_copy is False
        assert Channel(right, zero_copy=False).zero_copy is False
    finally:
        wrapped.close()
        right.close()


@pytest.mark.parametrize("zero_copy", [True, False])
def test_uploads_and_downloads_frame_the_same_either_way(tmp_path, zero_copy):
    import os
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    receiver, sender = Channel(left, zero_copy=zero_copy), Channel(right, zero_copy=zero_copy)
    payload = os.urandom(3 << 20)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    target = tmp_path / "target.bin"
    try:
        def send():
            with open(source, "rb") as handle:
                sender.send_file(handle, 1000, len(payload) - 1000)
            sender.send_line("AFTER")
        thread = threading.Thread(target=send)
        thread.start()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            assert receiver.read_exact_to_fd(fd, len(payload) - 1000) is None
        finally:
            os.close(fd)
        assert receiver.read_line() == b"AFTER"
        thread.join(10)
        assert target.read_bytes() == payload[1000:]
        assert (receiver._pipe is None) == (not zero_copy or not hasattr(os, "splice"))
    finally:
        receiver.close()
        sender.close()
