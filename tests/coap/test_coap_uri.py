"""URI parsing (RFC 7252 §6.4) and reconstruction from options (§6.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import (
    CoapUri,
    OptionNumber,
    Options,
    options_to_uri,
    parse_uri,
    uri_to_options,
)
from grouposcore.errors import UriError


def test_basic_name_host() -> None:
    u = parse_uri("coap://Example.COM/a/b?x=1&y")
    assert u == CoapUri("coap", "example.com", 5683, ["a", "b"], ["x=1", "y"])
    assert not u.host_is_ip


def test_ipv4_and_port() -> None:
    u = parse_uri("coap://192.0.2.1:61616/sensors/temp")
    assert (u.host, u.port, u.path, u.query) == ("192.0.2.1", 61616, ["sensors", "temp"], [])
    assert u.host_is_ip


def test_ipv6_literal_without_brackets() -> None:
    u = parse_uri("coaps://[2001:DB8::0001]:5684/")
    assert (u.scheme, u.host, u.port, u.path) == ("coaps", "2001:db8::1", 5684, [])
    assert parse_uri("coap://[fe80::1%25eth0]/x").host == "fe80::1%eth0"


def test_default_ports_and_scheme_case() -> None:
    assert parse_uri("coap://h").port == 5683
    assert parse_uri("COAPS://h").port == 5684
    assert parse_uri("coaps://h").scheme == "coaps"
    assert parse_uri("coap://h:").port == 5683  # empty port means default


def test_percent_encoding_and_empty_segments() -> None:
    u = parse_uri("coap://h/%7Euser/a%2Fb//%C3%A9?q%26=1&&a+b=%3F")
    assert u.path == ["~user", "a/b", "", "é"]
    assert u.query == ["q&=1", "", "a+b=?"]
    assert parse_uri("coap://h/").path == []
    assert parse_uri("coap://h").path == []
    assert parse_uri("coap://h/a/").path == ["a", ""]
    assert parse_uri("coap://h?").query == []
    assert parse_uri("coap://h?").path == []
    assert parse_uri("coap://h%41/").host == "ha"


@pytest.mark.parametrize(
    "uri",
    [
        "http://h/",
        "coap+tcp://h/",
        "coap:/nohost",
        "coap:h/x",
        "//h/x",
        "coap://",
        "coap:///path",
        "coap://h/x#frag",
        "coap://user@h/",
        "coap://h:port/",
        "coap://h:65536/",
        "coap://h:1:2/",
        "coap://[::1/",
        "coap://[::g]/",
        "coap://[::1]x/",
        "coap://[v1.x]/",
        "coap://[fe80::1%25]/",
        "coap://h/a b",
        "coap://h/%zz",
        "coap://h/%4",
        "coap://h/%ff",
        "coap://h/ü",
        "coap://h?a b",
        "coap://h^/",
        "coap://%ff/",
        "",
        "coap",
    ],
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(UriError):
        parse_uri(uri)


def test_non_str_is_uri_error() -> None:
    with pytest.raises(UriError):
        parse_uri(b"coap://h/")  # type: ignore[arg-type]


def test_uri_to_options_name_host() -> None:
    o = uri_to_options("coap://example.com:1234/a/b?x=1")
    assert list(o) == [
        (OptionNumber.URI_HOST, b"example.com"),
        (OptionNumber.URI_PORT, b"\x04\xd2"),
        (OptionNumber.URI_PATH, b"a"),
        (OptionNumber.URI_PATH, b"b"),
        (OptionNumber.URI_QUERY, b"x=1"),
    ]


def test_uri_to_options_ip_literal_and_default_port() -> None:
    o = Options([(OptionNumber.URI_HOST, "stale"), (OptionNumber.URI_PORT, 9), (12, 0)])
    out = uri_to_options(parse_uri("coap://[::1]:5683/x"), o)
    assert out is o
    assert list(o) == [(OptionNumber.URI_PATH, b"x"), (OptionNumber.CONTENT_FORMAT, b"")]
    assert OptionNumber.URI_HOST not in uri_to_options("coap://10.0.0.1/")
    assert uri_to_options("coaps://h:5683").uri_port == 5683
    assert uri_to_options("coaps://h:5684").uri_port is None


def test_uri_to_options_overlong_segment() -> None:
    with pytest.raises(UriError):
        uri_to_options("coap://h/" + "a" * 256)


def test_options_to_uri() -> None:
    o = uri_to_options("coap://example.com/a%2Fb/%C3%A9?k=v&q%26=?/")
    assert options_to_uri(o) == "coap://example.com/a%2Fb/%C3%A9?k=v&q%26=?/"
    assert options_to_uri(Options(), "::1", 5683) == "coap://[::1]/"
    assert options_to_uri(Options(), "192.0.2.1", 7000, "coaps") == "coaps://192.0.2.1:7000/"
    assert options_to_uri(Options([(7, 5684)]), "h", 1, "coaps") == "coaps://h/"
    assert options_to_uri(Options([(3, "name")]), "::1", 5683) == "coap://name/"
    with pytest.raises(UriError):
        options_to_uri(Options())
    with pytest.raises(UriError):
        options_to_uri(Options(), "h", None, "http")
    with pytest.raises(UriError):
        options_to_uri(Options([(11, b"\xff")]), "h")


def test_str_of_coap_uri() -> None:
    assert str(parse_uri("coap://[fe80::1%25eth0]:99/a?b")) == "coap://[fe80::1%25eth0]:99/a?b"


segment = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(deadline=None)
@given(
    st.sampled_from(["coap", "coaps"]),
    st.sampled_from(["example.org", "192.0.2.7", "2001:db8::5", "a-b.c_d~"]),
    st.integers(1, 65535),
    st.lists(segment, max_size=5),
    st.lists(segment, max_size=4),
)
def test_roundtrip_through_options(
    scheme: str, host: str, port: int, path: list[str], query: list[str]
) -> None:
    u = CoapUri(scheme, host, port, path, query)
    text = str(u)
    back = parse_uri(text)
    # A single empty segment (or query argument) and none at all are the same URI
    # (RFC 7252 §6.4 steps 8 and 9).
    expected_path = [] if path == [""] else path
    expected_query = [] if query == [""] else query
    assert back == CoapUri(scheme, host, port, expected_path, expected_query)
    opts = uri_to_options(back)
    assert options_to_uri(opts, host, port, scheme) == str(back)


@settings(deadline=None)
@given(st.text(max_size=40))
def test_random_text_only_raises_uri_error(text: str) -> None:
    for candidate in (text, "coap://" + text, "coap://h/" + text):
        try:
            u = parse_uri(candidate)
        except UriError:
            continue
        # accepted: an absolute coap(s) URI without fragment, stable through its text form
        assert candidate.lower().startswith(("coap://", "coaps://")) and "#" not in candidate
        assert parse_uri(str(u)) == u
