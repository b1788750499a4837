"""The request commands against ``grouposcore serve`` on loopback: provision a group,
serve it, and talk to it through the group file (in-process ``main([...])``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from grouposcore.cli.main import main
from grouposcore.oscore.config import read_secret_file, write_secret_file
from tests.cli.conftest import REPO, Served, grouposcore_cmd, start_serve, stop


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_get_through_the_group_file_prints_the_verified_response(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    # twice: the first request to a server may be its Echo challenge's pairwise repeat
    for _ in range(2):
        assert (
            main(
                [
                    "get",
                    served.uri("light"),
                    "--group",
                    str(served.member("client")),
                    "--timeout",
                    "5",
                ]
            )
            == 0
        )
    out, err = capsys.readouterr()
    state = out.splitlines()[-1]
    assert state in ("on", "off") or state.startswith("dim ")
    last = err.splitlines()[-1]
    assert last == f"2.05 Content from 127.0.0.1:{served.port} (verified: Sender ID 02, group mode)"


def test_json_output_names_sender_and_mode(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    group = str(served.member("client"))
    assert (
        main(
            [
                "put",
                served.uri("light"),
                "--group",
                group,
                "--pairwise",
                "02",
                "--payload",
                "dim 40",
                "--json",
                "--timeout",
                "5",
            ]
        )
        == 0
    )
    assert main(["get", served.uri("light"), "--group", group, "--json", "--timeout", "5"]) == 0
    put, get = json_lines(capsys.readouterr().out)
    assert put == {
        "remote": f"127.0.0.1:{served.port}",
        "code": "2.04",
        "status": "Changed",
        "verified": True,
        "sender_id": "02",
        "mode": "pairwise",
        "content_format": 0,
        "payload": "dim 40",
    }
    assert (get["code"], get["payload"], get["mode"], get["sender_id"]) == (
        "2.05",
        "dim 40",
        "group",
        "02",
    )


def test_post_toggles_and_bad_states_are_refused(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    group = str(served.member("client"))
    common = ["--group", group, "--json", "--timeout", "5"]
    assert main(["put", served.uri("light"), "--payload", "off", *common]) == 0
    assert main(["post", served.uri("light"), *common]) == 0
    assert main(["post", served.uri("light"), "--payload", "toggle", *common]) == 0
    assert main(["put", served.uri("light"), "--payload", "dim 101", *common]) == 1
    assert (
        main(["put", served.uri("light"), "--payload", "on", "--content-format", "50", *common])
        == 1
    )
    assert main(["delete", served.uri("light"), *common]) == 1
    records = json_lines(capsys.readouterr().out)
    assert [(r["code"], r.get("payload")) for r in records[:3]] == [
        ("2.04", "off"),
        ("2.04", "on"),
        ("2.04", "off"),
    ]
    assert [r["code"] for r in records[3:]] == ["4.00", "4.15", "4.05"]
    assert all(r["verified"] and r["sender_id"] == "02" for r in records)


def test_payload_file(served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = tmp_path / "state.txt"
    body.write_text("dim 7\n")
    assert (
        main(
            [
                "put",
                served.uri("light"),
                "--payload-file",
                str(body),
                "--group",
                str(served.member("client")),
                "-q",
                "--timeout",
                "5",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "dim 7\n"


def test_unprotected_request_to_secured_resource_is_refused(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", served.uri("light"), "--timeout", "5"]) == 1
    out, err = capsys.readouterr()
    assert out == "Security context required\n"  # the diagnostic payload
    assert "4.01 Unauthorized" in err and "not protected" in err


def test_discovery_is_open_and_lists_secured_resources(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", served.uri(".well-known/core"), "-q", "--timeout", "5"]) == 0
    links = capsys.readouterr().out
    assert '</light>;rt="core.light"' in links and "gosc" in links and "obs" in links
    assert "</time>" in links


def test_observe_time_prints_verified_notifications(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "observe",
                served.uri("time"),
                "--group",
                str(served.member("client")),
                "--count",
                "2",
                "--json",
                "--timeout",
                "5",
            ]
        )
        == 0
    )
    first, second = json_lines(capsys.readouterr().out)
    for r in (first, second):
        assert r["verified"] and r["sender_id"] == "02" and r["code"] == "2.05"
        assert r["payload"].endswith("Z")
    assert second["observe"] != first["observe"]


def test_a_foreign_group_file_is_refused_by_the_server(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["group", "provision", "mallory", "x", "--out", str(tmp_path), "-q"]) == 0
    assert (
        main(
            [
                "get",
                served.uri("light"),
                "--group",
                str(tmp_path / "mallory.json"),
                "--timeout",
                "2",
            ]
        )
        == 3
    )
    # a group-mode request is refused in silence (RFC 10021 §7: it may be a group request)
    assert "no response" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pairwise", "02"], "--pairwise needs a group security file"),
        (["--security", "G", "--pairwise", "zz"], "not a hex Sender ID"),
        (["--group", "G", "--pairwise", "09"], "not a member"),
    ],
)
def test_usage_errors(
    served: Served, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    extra = [str(served.member("client")) if a == "G" else a for a in extra]
    assert main(["get", served.uri("light"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_bad_uri_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["get", "http://127.0.0.1/x"]) == 2
    assert main(["get", "not a uri"]) == 2


def test_security_file_without_sequence_file_is_refused(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = read_secret_file(served.member("client"))
    del doc["sequence_file"]
    path = write_secret_file(tmp_path / "volatile.json", doc)
    assert main(["get", served.uri("light"), "--group", str(path)]) == 2
    assert "sequence_file" in capsys.readouterr().err


def test_world_readable_security_file_is_refused(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_secret_file(tmp_path / "open.json", read_secret_file(served.member("client")))
    os.chmod(path, 0o644)
    assert main(["get", served.uri("light"), "--group", str(path)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_sequence_numbers_persist_between_runs(served: Served) -> None:
    """Separate processes with the same group file: no replay rejections, because each run
    continues the sequence numbers the previous one reserved."""
    for _ in range(3):
        proc = subprocess.run(
            grouposcore_cmd(
                "get",
                served.uri("light"),
                "--group",
                str(served.member("client")),
                "--timeout",
                "5",
            ),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "verified: Sender ID 02" in proc.stderr


def test_restarted_server_challenges_then_answers(
    group_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that just started has no valid replay windows: the first request gets a
    protected 4.01+Echo and the client's repeat (pairwise, RFC 10021 §9) is answered; the
    next request goes through in group mode."""
    proc, port = start_serve("--security", str(group_dir / "light1.json"), "-v")
    try:
        for _ in range(2):
            assert (
                main(
                    [
                        "get",
                        f"coap://127.0.0.1:{port}/light",
                        "--group",
                        str(group_dir / "client.json"),
                        "--json",
                        "--timeout",
                        "5",
                    ]
                )
                == 0
            )
    finally:
        err = stop(proc)
    records = json_lines(capsys.readouterr().out)
    assert [(r["code"], r["sender_id"], r["mode"]) for r in records] == [
        ("2.05", "02", "pairwise"),
        ("2.05", "02", "group"),
    ]
    assert "light is" not in err  # reads only: no state change


def test_unsecured_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc, port = start_serve()
    try:
        assert (
            main(
                [
                    "put",
                    f"coap://127.0.0.1:{port}/light",
                    "--payload",
                    "on",
                    "--timeout",
                    "5",
                    "--json",
                ]
            )
            == 0
        )
        assert (
            main(["get", f"coap://127.0.0.1:{port}/light", "--timeout", "5", "--json", "--non"])
            == 0
        )
    finally:
        stop(proc)
    put, get = json_lines(capsys.readouterr().out)
    assert (put["code"], put["payload"], put["verified"]) == ("2.04", "on", False)
    assert (get["payload"], get["mode"]) == ("on", "plain")


def test_oscore_security_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """RFC 8613 OSCORE (one peer, no group) through ``--security`` on both sides."""
    common = {
        "type": "oscore",
        "master_secret": "0102030405060708090a0b0c0d0e0f10",
        "master_salt": "9e7ca92223786340",
    }
    write_secret_file(
        tmp_path / "server.json",
        dict(common, sender_id="01", recipient_id="", sequence_file="server.seq"),
    )
    client = write_secret_file(
        tmp_path / "client.json",
        dict(common, sender_id="", recipient_id="01", sequence_file="client.seq"),
    )
    proc, port = start_serve("--security", str(tmp_path / "server.json"))
    try:
        assert (
            main(
                [
                    "post",
                    f"coap://127.0.0.1:{port}/light",
                    "--security",
                    str(client),
                    "--json",
                    "--timeout",
                    "5",
                ]
            )
            == 0
        )
        assert (
            main(["get", f"coap://127.0.0.1:{port}/.well-known/core", "-q", "--timeout", "5"]) == 0
        )
        assert (
            main(
                [
                    "get",
                    f"coap://127.0.0.1:{port}/light",
                    "--security",
                    str(client),
                    "--pairwise",
                    "01",
                ]
            )
            == 2
        )
    finally:
        stop(proc)
    out = capsys.readouterr().out.splitlines()
    changed = json.loads(out[0])
    assert (changed["code"], changed["payload"], changed["mode"], changed["sender_id"]) == (
        "2.04",
        "on",
        "oscore",
        "01",
    )
    assert ";osc" in out[1] and "gosc" not in out[1]


def test_a_second_server_on_a_taken_port_names_the_port_and_the_fix(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two members on one host must not silently share a unicast port."""
    assert (
        main(
            [
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                str(served.port),
                "--security",
                str(served.member("light1")),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert f"127.0.0.1:{served.port} is in use" in err and "its own --port" in err


def test_first_observe_after_a_server_start_answers_the_echo_challenge(
    group_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fresh server challenges each member's first request (Echo); observe repeats its
    registration with the Echo value, as get and put do, instead of failing with 4.01."""
    proc, port = start_serve("--security", str(group_dir / "light1.json"))
    try:
        assert (
            main(
                [
                    "observe",
                    f"coap://127.0.0.1:{port}/light",
                    "--security",
                    str(group_dir / "client.json"),
                    "--count",
                    "1",
                    "--json",
                ]
            )
            == 0
        )
        record = json.loads(capsys.readouterr().out.splitlines()[0])
        assert record["code"] == "2.05" and record["verified"]
        assert record.get("observe") is not None
    finally:
        stop(proc)


@pytest.mark.parametrize(
    ("argv", "shown", "hidden"),
    [
        (["get", "coap://h/"], "--security FILE", "--group"),
        (["observe", "coap://h/"], "--security FILE", "--group"),
        (["serve"], "--multicast ADDR", "--join"),
        (["push", "f", "coap://224.0.1.187/fw"], "--security FILE", "--group"),
        (["receive"], "--multicast ADDR", "--join"),
    ],
)
def test_one_vocabulary_the_old_flags_are_hidden_aliases(
    argv: list[str], shown: str, hidden: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--security FILE is the member's security file and --multicast ADDR a group address
    everywhere; --group and --join still parse, to the same thing, but are not advertised."""
    from grouposcore.cli.main import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args([argv[0], "--help"])
    help_text = capsys.readouterr().out
    assert shown in help_text and f"{hidden} " not in help_text
    old = build_parser().parse_args([*argv, hidden, "x"])
    new = build_parser().parse_args([*argv, shown.split()[0], "x"])
    dest = "security" if shown.startswith("--security") else "multicast"
    assert getattr(old, dest) == getattr(new, dest) in ("x", ["x"])


def test_content_format_takes_names_like_other_coap_clients() -> None:
    from grouposcore.cli.client import content_format

    assert content_format("json") == 50 == content_format("application/json")
    assert content_format("text/plain") == 0 and content_format("cbor") == 60
    assert content_format("11050") == 11050
    import argparse

    for bad in ("nonsense", "70000"):
        with pytest.raises(argparse.ArgumentTypeError):
            content_format(bad)


def test_unknown_host_is_named_and_not_a_timeout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    def no_such_host(*args: object, **kwargs: object) -> list[object]:
        # the resolver's answer, without asking a name server (no traffic off the host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    assert main(["get", "coap://no-such-host.invalid/light"]) == 2
    assert "cannot resolve host 'no-such-host.invalid'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["not", "an", "object"]', "a security file is a JSON object"),
    ],
)
def test_a_wrong_security_file_is_named_and_described(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "wrong.json"
    path.write_text(text)
    path.chmod(0o600)
    assert main(["get", "coap://127.0.0.1:9/light", "--security", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "CBOR" not in err


def test_bad_hex_in_a_security_file_names_the_file(
    group_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = read_secret_file(group_dir / "client.json")
    document["master_secret"] = "zz"
    path = tmp_path / "badhex.json"
    write_secret_file(path, document)
    assert main(["get", "coap://127.0.0.1:9/light", "--security", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "master_secret" in err


def test_provision_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["group", "provision", "a", "b", "--out", str(tmp_path), "-q"]) == 0
    assert capsys.readouterr().out == ""


def test_received_files_are_private_to_their_owner(tmp_path: Path) -> None:
    from grouposcore.cli.receive_cmd import _write_private

    target = tmp_path / "fw.bin"
    target.write_bytes(b"old")
    target.chmod(0o644)
    _write_private(target, b"firmware")
    assert target.read_bytes() == b"firmware"
    assert os.stat(target).st_mode & 0o777 == 0o600


def test_accept_is_sent_and_an_unavailable_format_gets_4_06(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--security", str(served.member("client")), "--json", "--timeout", "5"]
    assert main(["get", served.uri("light"), "--accept", "json", *common]) == 1
    assert json_lines(capsys.readouterr().out)[0]["code"] == "4.06"
    assert main(["get", served.uri("light"), "--accept", "text/plain", *common]) == 0
    assert json_lines(capsys.readouterr().out)[0]["code"] == "2.05"


def test_output_file_gets_the_payload_byte_for_byte(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "light.txt"
    assert (
        main(
            [
                "put",
                served.uri("light"),
                "--security",
                str(served.member("client")),
                "--payload",
                "dim 7",
                "--timeout",
                "5",
                "-o",
                str(target),
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert target.read_bytes() == b"dim 7" and captured.out == ""
    assert "verified: Sender ID 02" in captured.err


def test_observe_duration_ends_a_silent_observation(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    """/light notifies only on change: without --duration this would wait forever."""
    assert (
        main(
            [
                "observe",
                served.uri("light"),
                "--security",
                str(served.member("client")),
                "--json",
                "--duration",
                "1.5",
            ]
        )
        == 0
    )
    records = json_lines(capsys.readouterr().out)
    assert len(records) == 1 and records[0]["code"] == "2.05"


def test_block_size_option_moves_a_large_payload_in_small_blocks(
    served: Served, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 300-byte PUT in 64-byte blocks: the light refuses the text (not a state), but only
    after reassembling it, so the answer proves the blocks arrived."""
    sizes: list[int] = []
    from grouposcore.oscore.security import ClientSecurity

    real = ClientSecurity.protect_request

    def spy(self: ClientSecurity, request: Any) -> Any:
        # inner block-wise: each block is protected on its own (RFC 8613 §4.1.3.4.1)
        if request.options.block1 is not None:
            sizes.append(request.options.block1.size)
        return real(self, request)

    monkeypatch.setattr(ClientSecurity, "protect_request", spy)
    assert (
        main(
            [
                "put",
                served.uri("light"),
                "--payload",
                "x" * 300,
                "--block-size",
                "64",
                "--security",
                str(served.member("client")),
                "--json",
                "--timeout",
                "5",
            ]
        )
        == 1
    )
    assert json_lines(capsys.readouterr().out)[0]["code"] == "4.00"
    assert sizes and set(sizes) == {64}
    import argparse

    from grouposcore.cli.client import block_size

    with pytest.raises(argparse.ArgumentTypeError):
        block_size("100")


def test_arbitrary_options_are_added_to_the_request() -> None:
    from grouposcore.cli import client
    from grouposcore.cli.main import build_parser
    from grouposcore.coap import parse_uri

    args = build_parser().parse_args(
        [
            "get",
            "coap://h/light",
            "--option",
            "2053=0x0a0b",
            "--option",
            "15=a=b",
            "--option",
            "60=300",
        ]
    )
    msg = client.build_request(args, parse_uri(args.uri))
    assert msg.options.get(2053) == b"\x0a\x0b"
    assert msg.options.get(60) == (300).to_bytes(2, "big")
    assert "a=b" in msg.options.uri_query
    import argparse

    for bad in ("x=1", "15", "0=1", "15=0xzz"):
        with pytest.raises(argparse.ArgumentTypeError):
            client.coap_option(bad)


def test_a_timeout_names_the_server_as_host_and_port(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from grouposcore.errors import RequestTimeout
    from grouposcore.transport import Endpoint

    async def unanswered(*args: object, **kwargs: object) -> None:
        raise RequestTimeout("no acknowledgement from ('127.0.0.1', 9) after 4 retransmissions")

    monkeypatch.setattr(Endpoint, "request", unanswered)
    assert main(["get", "coap://127.0.0.1:9/light"]) == 3
    err = capsys.readouterr().err
    assert "no answer from 127.0.0.1:9" in err and "from 127.0.0.1:9 after" in err
    assert "('127.0.0.1', 9)" not in err


def test_token_option_sets_the_requests_token(capsys: pytest.CaptureFixture[str]) -> None:
    """``--token`` as coap-client's ``-T``: the request carries exactly that token."""
    import argparse
    import socket
    import threading

    from grouposcore.cli import client
    from grouposcore.coap import Code, Message, Type

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(10)
    seen: list[bytes] = []

    def answer() -> None:
        data, addr = server.recvfrom(2048)
        req = Message.decode(data)
        seen.append(req.token)
        reply = Message(Code.CONTENT, Type.ACK, req.mid, token=req.token, payload=b"ok")
        server.sendto(reply.encode(), addr)

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        port = server.getsockname()[1]
        assert (
            main(["get", f"coap://127.0.0.1:{port}/x", "--token", "c0ffee", "--timeout", "5"]) == 0
        )
    finally:
        thread.join(10)
        server.close()
    assert seen == [bytes.fromhex("c0ffee")]
    assert capsys.readouterr().out == "ok\n"
    for bad in ("zz", "00" * 9):
        with pytest.raises(argparse.ArgumentTypeError):
            client._token(bad)


def test_a_closed_port_fails_at_once_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    """The ICMP port-unreachable of a closed port ends the request at once (it took about
    77 s of retransmissions before) and is a network error (exit 1), named host:port."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    # exit 1 and "unreachable", not exit 3 and "timeout": the ICMP error ended it
    assert main(["get", f"coap://127.0.0.1:{port}/x"]) == 1
    err = capsys.readouterr().err
    assert f"unreachable: 127.0.0.1:{port}: connection refused" in err
