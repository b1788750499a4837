"""Static group and OSCORE security files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grouposcore.errors import FreshnessRequired, GroupOscoreError, ReplayError
from grouposcore.oscore import GroupContext, SecurityContext
from grouposcore.oscore.config import (
    ConfigError,
    group_context_from_document,
    load_security,
    oscore_context_from_document,
    provision_static_group,
    read_secret_file,
    write_secret_file,
)
from tests.oscore.helpers import content, echo_challenge, get


def test_provisioned_group_members_talk(tmp_path: Path) -> None:
    docs = provision_static_group(["switch", "light-1", "light-2"], name="lights")
    paths = {n: write_secret_file(tmp_path / f"{n}.json", d) for n, d in docs.items()}
    for path in paths.values():
        assert (os.stat(path).st_mode & 0o777) == 0o600
    switch = load_security(paths["switch"])
    lights = [load_security(paths[n]) for n in ("light-1", "light-2")]
    assert isinstance(switch, GroupContext)
    for light in lights:  # loaded contexts start with invalid windows: Echo first
        assert isinstance(light, GroupContext)
        first, _ = switch.protect_request(get())
        with pytest.raises(FreshnessRequired) as info:
            light.unprotect_request(first)
        retry = get()
        retry.options.echo = info.value.echo
        light.unprotect_request(switch.protect_request(retry, pairwise_with=light.sender_id)[0])
    request, binding = switch.protect_request(get())
    for light in lights:
        assert isinstance(light, GroupContext)
        plain, sbinding = light.unprotect_request(request)
        assert plain.options.uri_path == ["light"]
        reply, info = switch.unprotect_response(
            light.protect_response(content(b"ok"), sbinding), binding
        )
        assert reply.payload == b"ok" and info.sender_id == light.sender_id


def test_world_readable_file_is_refused(tmp_path: Path) -> None:
    path = write_secret_file(tmp_path / "m.json", provision_static_group(["a", "b"])["a"])
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(path)


def test_sequence_file_survives_restart(tmp_path: Path) -> None:
    doc = provision_static_group(["a", "b"])["a"] | {"sequence_file": "other.seq"}
    path = write_secret_file(tmp_path / "a.json", doc)
    first = load_security(path)
    _, b1 = first.protect_request(get())
    again = load_security(path)  # a restart: numbers continue beyond the reservation
    _, b2 = again.protect_request(get())
    assert int.from_bytes(b2.request_piv, "big") > int.from_bytes(b1.request_piv, "big")


def test_oscore_file(tmp_path: Path) -> None:
    common = {
        "type": "oscore",
        "master_secret": "0102030405060708090a0b0c0d0e0f10",
        "master_salt": "9e7ca92223786340",
    }
    client = write_secret_file(
        tmp_path / "c.json", common | {"sender_id": "", "recipient_id": "01"}
    )
    ctx = load_security(client)
    assert isinstance(ctx, SecurityContext)
    assert ctx.sender_key.hex() == "f0910ed7295e6ad4b54fc793154302ff"


@pytest.mark.parametrize(
    "change",
    [
        {"gid": "zz"},
        {"master_secret": None},
        {"members": "x"},
        {"members": [{"sender_id": "01"}]},
        {"credential": "a0"},
        {"signature": 99},
        {"type": "other"},
        {"freshness": "never"},
    ],
)
def test_malformed_group_files_are_clear_errors(tmp_path: Path, change: dict) -> None:
    doc = provision_static_group(["a", "b"])["a"]
    doc.update(change)
    path = write_secret_file(tmp_path / "a.json", doc)
    with pytest.raises(GroupOscoreError):
        load_security(path)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError):
        load_security(path)


def _recorded_requests(docs: dict, sender: str, count: int) -> list:
    client = group_context_from_document(docs[sender], base=Path("/nonexistent"), sequence=None)
    return [client.protect_request(get())[0] for _ in range(count)]


def test_group_context_from_document_starts_with_invalid_windows(tmp_path: Path) -> None:
    """A restarted member (RAM lost, file kept) must not deliver a recorded request again:
    the windows of a loaded context are invalid and Echo recovers them (issue 9 item 2)."""
    docs = provision_static_group(["switch", "light"])
    recorded = _recorded_requests(docs, "switch", 3)
    light_path = write_secret_file(tmp_path / "light.json", docs["light"])
    for _restart in range(2):
        light = load_security(light_path)
        assert isinstance(light, GroupContext)
        assert not any(rc.replay_window.valid for rc in light.recipients.values())
        for msg in recorded:
            with pytest.raises(FreshnessRequired):
                light.unprotect_request(msg)


def test_replay_windows_valid_needs_persisted_replay_state(tmp_path: Path) -> None:
    docs = provision_static_group(["switch", "light"])
    with pytest.raises(ConfigError, match="replay_state_persisted"):
        group_context_from_document(docs["light"], base=tmp_path, replay_windows_valid=True)
    light = group_context_from_document(
        docs["light"], base=tmp_path, replay_windows_valid=True, replay_state_persisted=True
    )
    light.unprotect_request(_recorded_requests(docs, "switch", 1)[0])
    with pytest.raises(ConfigError, match="not honoured"):
        group_context_from_document(docs["light"] | {"replay_windows_valid": True}, base=tmp_path)


def test_oscore_context_from_document_starts_with_invalid_window(tmp_path: Path) -> None:
    common = {"type": "oscore", "master_secret": "0102030405060708090a0b0c0d0e0f10"}
    client = SecurityContext(bytes.fromhex(common["master_secret"]), b"", b"\x01")
    recorded, _ = client.protect_request(get())
    server_doc = common | {"sender_id": "01", "recipient_id": "", "sequence_file": "s.seq"}
    server = oscore_context_from_document(server_doc, base=tmp_path)
    with pytest.raises(FreshnessRequired):
        server.unprotect_request(recorded)
    with pytest.raises(ConfigError, match="replay_state_persisted"):
        oscore_context_from_document(server_doc, base=tmp_path, replay_window_valid=True)
    restored = oscore_context_from_document(
        server_doc, base=tmp_path, replay_window_valid=True, replay_state_persisted=True
    )
    restored.unprotect_request(recorded)


def test_oscore_server_file_without_sequence_file_is_refused(tmp_path: Path) -> None:
    doc = {
        "type": "oscore",
        "master_secret": "0102030405060708090a0b0c0d0e0f10",
        "sender_id": "01",
        "recipient_id": "",
    }
    path = write_secret_file(tmp_path / "server.json", doc)
    with pytest.raises(ConfigError, match="needs 'sequence_file'"):
        load_security(path, role="server")
    with pytest.raises(ConfigError, match="needs 'sequence_file'"):
        oscore_context_from_document(doc, role="server")
    assert isinstance(load_security(path), SecurityContext)  # a client may be in memory
    group = provision_static_group(["a", "b"])["a"]
    del group["sequence_file"]
    with pytest.raises(ConfigError, match="a group server file needs 'sequence_file'"):
        group_context_from_document(group, role="server")
    silent = group | {"sender_id": None}
    assert group_context_from_document(silent, role="server").sender_id is None


def test_provisioned_documents_never_reuse_a_partial_iv_after_reload(tmp_path: Path) -> None:
    """provision_static_group sets up durable sequence numbers: a member reloaded from its
    document continues beyond everything it may have used (issue 9 item 2)."""
    docs = provision_static_group(["a", "b"])
    assert {d["sequence_file"] for d in docs.values()} == {"a.seq", "b.seq"}
    used: set[bytes] = set()
    for _restart in range(3):
        ctx = group_context_from_document(docs["a"], base=tmp_path)
        for _ in range(3):
            _, binding = ctx.protect_request(get())
            assert binding.request_piv not in used
            used.add(binding.request_piv)
    assert (tmp_path / "a.seq").exists()


def test_relative_sequence_file_without_base_is_refused() -> None:
    doc = provision_static_group(["a", "b"])["a"]
    with pytest.raises(ConfigError, match="needs base="):
        group_context_from_document(doc)


@pytest.mark.parametrize("old", ["drop-first", "accept"])
def test_retired_freshness_in_a_file_says_what_to_use(tmp_path: Path, old: str) -> None:
    doc = provision_static_group(["a", "b"])["a"] | {"freshness": old}
    with pytest.raises(ConfigError, match=r"no longer supported.*use 'echo'"):
        group_context_from_document(doc, base=tmp_path)
    with pytest.raises(ConfigError, match="no longer supported"):
        group_context_from_document(
            provision_static_group(["a", "b"])["a"], base=tmp_path, freshness=old
        )


def test_gm_cred_null_means_cbor_null_in_the_external_aad(tmp_path: Path) -> None:
    """aiocoap's static groups put CBOR null as gm_cred; a file says so with null, and
    such a member does not verify with one that uses h'' (issue 9 item 21)."""
    docs = provision_static_group(["a", "b"], gm_cred=None)
    assert docs["a"]["gm_cred"] is None
    a = group_context_from_document(docs["a"], base=tmp_path)
    assert a._own_aad_tail.endswith(b"\xf6") and a._gm_cred_bstr == b"\xf6"
    b_null = group_context_from_document(docs["b"], base=tmp_path)
    without = dict(docs["b"])
    del without["gm_cred"]
    b_empty = group_context_from_document(without, base=tmp_path)
    assert b_empty._gm_cred_bstr == b"\x40"
    request, _ = a.protect_request(get())
    with pytest.raises(FreshnessRequired):  # verified: only freshness is unknown
        b_null.unprotect_request(request)
    with pytest.raises(GroupOscoreError, match="signature"):
        b_empty.unprotect_request(request)


def test_empty_gm_cred_string_is_refused_and_never_written(tmp_path: Path) -> None:
    doc = provision_static_group(["a", "b"])["a"]
    assert "gm_cred" not in doc  # provision leaves it out for h'' rather than write ""
    with pytest.raises(ConfigError, match="write null"):
        group_context_from_document(doc | {"gm_cred": ""}, base=tmp_path)
    gm = provision_static_group(["a", "b"], gm_cred=b"\xa1\x01\x02")["a"]
    assert gm["gm_cred"] == "a10102"
    assert group_context_from_document(gm, base=tmp_path)._gm_cred_bstr == b"\x43\xa1\x01\x02"


def test_replayed_request_after_echo_recovery_is_refused(tmp_path: Path) -> None:
    docs = provision_static_group(["switch", "light"])
    switch = group_context_from_document(docs["switch"], base=tmp_path)
    light = group_context_from_document(docs["light"], base=tmp_path)
    old, _ = switch.protect_request(get())
    first, _ = switch.protect_request(get())
    with pytest.raises(FreshnessRequired) as info:
        light.unprotect_request(first)
    echo_challenge(info.value, first)
    retry = get()
    retry.options.echo = info.value.echo
    light.unprotect_request(switch.protect_request(retry, pairwise_with=light.sender_id)[0])
    for msg in (old, first):
        with pytest.raises(ReplayError):
            light.unprotect_request(msg)


def test_raw_ed25519_seed_is_accepted_where_a_cose_key_is_expected() -> None:
    """Other tools keep an Ed25519 key as its raw 32-byte seed; anything that is neither that
    nor a COSE_Key gets an error naming both formats."""
    from cryptography.hazmat.primitives import serialization

    from grouposcore.oscore.config import ConfigError, provision_static_group
    from tests.oscore.helpers import fresh_context

    docs = provision_static_group(["a", "b"])
    original = fresh_context(docs["a"])
    seed = original.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    docs["a"]["private_key"] = seed.hex()
    again = fresh_context(docs["a"])
    msg, _ = again.protect_request(get())
    request, _ = fresh_context(docs["b"]).unprotect_request(msg)  # b verifies a's signature
    assert request.options.uri_path == ["light"]
    docs["a"]["private_key"] = "00" * 31
    with pytest.raises(ConfigError, match=r"COSE_Key .* raw 32-byte Ed25519 seed"):
        fresh_context(docs["a"])
