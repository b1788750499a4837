"""aiocoap's and libcoap's OSCORE credentials work with ``--security`` unchanged: the same
keys as the tool that wrote them derives, requests verified end to end, and the sequence
number continues where the other tool will look for it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from grouposcore.cli.main import main
from grouposcore.cli.security_files import kind, load_context
from grouposcore.oscore import SecurityContext
from tests.cli.conftest import start_serve, stop

SECRET = "0102030405060708090a0b0c0d0e0f10"
SALT = "9e7ca92223786340"


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def _aiocoap_dir(path: Path, sender: str, recipient: str) -> Path:
    path.mkdir()
    _private(
        path / "settings.json",
        json.dumps(
            {
                "sender-id_hex": sender,
                "recipient-id_ascii": recipient,
                "secret_hex": SECRET,
                "salt_hex": SALT,
                "algorithm": "AES-CCM-16-64-128",
                "kdf-hashfun": "sha256",
            }
        ),
    )
    return path


def test_aiocoap_context_derives_the_keys_aiocoap_derives(tmp_path: Path) -> None:
    aiocoap_oscore = pytest.importorskip("aiocoap.oscore")
    directory = _aiocoap_dir(tmp_path / "ctx", "01", "server")
    ours = load_context(str(directory))
    assert isinstance(ours, SecurityContext)
    theirs = aiocoap_oscore.FilesystemSecurityContext(str(directory))
    try:
        assert (ours.sender_key, ours.recipient_key, ours.common_iv) == (
            theirs.sender_key,
            theirs.recipient_key,
            theirs.common_iv,
        )
    finally:
        theirs._destroy()


def test_aiocoap_credentials_map_protects_requests_and_continues_its_sequence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aiocoap_oscore = pytest.importorskip("aiocoap.oscore")
    server_dir = _aiocoap_dir(tmp_path / "server", "736572766572", "")  # "server", ""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    _private(
        client_dir / "secret.json",
        json.dumps(
            {
                "sender-id_hex": "",
                "recipient-id_ascii": "server",
                "secret_hex": SECRET,
                "salt_hex": SALT,
            }
        ),
    )
    credentials = _private(
        tmp_path / "credentials.json",
        json.dumps(
            {
                "coap://127.0.0.1*": {"oscore": {"basedir": "client/"}},
                "coap://elsewhere/*": {"oscore": {"basedir": "nowhere/"}},
            }
        ),
    )
    assert kind(str(credentials)) == "aiocoap-credentials"
    proc, port = start_serve("--security", str(server_dir))
    try:
        assert (
            main(
                [
                    "put",
                    f"coap://127.0.0.1:{port}/light",
                    "--security",
                    str(credentials),
                    "--payload",
                    "on",
                    "--json",
                    "--timeout",
                    "5",
                ]
            )
            == 0
        )
        record = json.loads(capsys.readouterr().out.splitlines()[0])
        assert record["verified"] and record["mode"] == "oscore" and record["code"] == "2.04"
    finally:
        stop(proc)
    # aiocoap reads the number we reserved: it will not reuse ours
    theirs = aiocoap_oscore.FilesystemSecurityContext(str(client_dir))
    try:
        assert theirs.sender_sequence_number >= 1
    finally:
        theirs._destroy()
    assert main(["get", "coap://10.9.9.9/light", "--security", str(credentials)]) == 2
    assert "no OSCORE credentials for coap://10.9.9.9/light" in capsys.readouterr().err


def _libcoap_conf(path: Path, sender: str, recipient: str) -> Path:
    return _private(
        path,
        "\n".join(
            [
                "# written for coap-client -E",
                f'master_secret,hex,"{SECRET}"',
                f'master_salt,hex,"{SALT}"',
                f'sender_id,ascii,"{sender}"',
                f'recipient_id,ascii,"{recipient}"',
                "replay_window,integer,30",
                "aead_alg,text,COSE_ALGORITHM_AES_CCM_16_64_128",
                "hkdf_alg,integer,-10",
                "",
            ]
        ),
    )


def test_libcoap_conf_files_work_on_both_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = _libcoap_conf(tmp_path / "server.conf", "server", "client")
    client = _libcoap_conf(tmp_path / "client.conf", "client", "server")
    assert kind(str(client)) == "libcoap"
    ours = tmp_path / "same.json"
    _private(
        ours,
        json.dumps(
            {
                "type": "oscore",
                "master_secret": SECRET,
                "master_salt": SALT,
                "sender_id": b"client".hex(),
                "recipient_id": b"server".hex(),
            }
        ),
    )
    mine, theirs = load_context(str(ours)), load_context(str(client))
    assert isinstance(mine, SecurityContext) and isinstance(theirs, SecurityContext)
    assert (mine.sender_key, mine.recipient_key, mine.common_iv) == (
        theirs.sender_key,
        theirs.recipient_key,
        theirs.common_iv,
    )
    proc, port = start_serve("--security", str(server))
    try:
        assert (
            main(
                [
                    "get",
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
        assert json.loads(capsys.readouterr().out.splitlines()[0])["mode"] == "oscore"
    finally:
        stop(proc)
    assert Path(f"{client}.seq").exists()  # numbers survive a restart


def test_foreign_files_with_readable_secrets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _libcoap_conf(tmp_path / "client.conf", "client", "server")
    os.chmod(conf, 0o644)
    assert main(["get", "coap://127.0.0.1:9/light", "--security", str(conf)]) == 2
    assert "accessible by other users" in capsys.readouterr().err


def test_group_export_writes_contexts_the_other_tools_read_and_continues_the_sequence(
    tmp_path: Path,
) -> None:
    aiocoap_oscore = pytest.importorskip("aiocoap.oscore")
    ours = _private(
        tmp_path / "ours.json",
        json.dumps(
            {
                "type": "oscore",
                "master_secret": SECRET,
                "master_salt": SALT,
                "sender_id": "01",
                "recipient_id": "",
                "id_context": "37cbf3210017a2d3",
                "sequence_file": "ours.seq",
            }
        ),
    )
    original = load_context(str(ours))
    assert isinstance(original, SecurityContext)
    for _ in range(70):  # past the first durable reservation
        original.sequence.next()
    used = original.sequence.peek()
    assert (
        main(
            [
                "group",
                "export",
                str(ours),
                "--format",
                "aiocoap",
                "--out",
                str(tmp_path / "ctx"),
                "-q",
            ]
        )
        == 0
    )
    theirs = aiocoap_oscore.FilesystemSecurityContext(str(tmp_path / "ctx"))
    try:
        assert (theirs.sender_key, theirs.recipient_key, theirs.common_iv) == (
            original.sender_key,
            original.recipient_key,
            original.common_iv,
        )
        assert theirs.id_context == bytes.fromhex("37cbf3210017a2d3")
        assert theirs.sender_sequence_number >= used
    finally:
        theirs._destroy()
    conf = tmp_path / "exported.conf"
    assert (
        main(["group", "export", str(ours), "--format", "libcoap", "--out", str(conf), "-q"]) == 0
    )
    back = load_context(str(conf))
    assert isinstance(back, SecurityContext)
    assert (back.sender_key, back.common_iv, back.id_context) == (
        original.sender_key,
        original.common_iv,
        original.id_context,
    )
    assert back.sequence.peek() >= used
    assert os.stat(conf).st_mode & 0o777 == 0o600


def test_group_contexts_are_not_exported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["group", "provision", "a", "b", "--out", str(tmp_path), "-q"]) == 0
    assert (
        main(
            [
                "group",
                "export",
                str(tmp_path / "a.json"),
                "--format",
                "libcoap",
                "--out",
                str(tmp_path / "a.conf"),
            ]
        )
        == 2
    )
    assert "RFC 8613 contexts only" in capsys.readouterr().err


def test_foreign_contexts_start_with_invalid_replay_windows(tmp_path: Path) -> None:
    """aiocoap and libcoap files are storage too (issue 9 item 2): a request recorded before
    this process started must not be delivered again, so their windows wait for Echo."""
    for path in (
        _aiocoap_dir(tmp_path / "ctx", "01", "server"),
        _libcoap_conf(tmp_path / "server.conf", "server", "client"),
    ):
        context = load_context(str(path))
        assert isinstance(context, SecurityContext)
        assert not context.replay_window.valid, path
