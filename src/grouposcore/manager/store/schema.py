"""The GM database schema: the tables both backends create, with their column types.

The SQL is written once; a backend fills in its type names (``BLOB``/``BYTEA``,
``REAL``/``DOUBLE PRECISION``, ``INTEGER``/``BIGINT``). ``SCHEMA_VERSION`` is what a database
file records; :meth:`~grouposcore.manager.store.txn.StoreCore._create_schema` refuses others
and migrates the ones it knows.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "schema_statements"]

SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS gm_keys (
    sign_alg {int} PRIMARY KEY,
    private_key {blob} NOT NULL,
    credential {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    gid_prefix {blob} NOT NULL UNIQUE,
    epoch {int} NOT NULL,
    epoch_len {int} NOT NULL,
    gid {blob} NOT NULL UNIQUE,
    master_secret {blob} NOT NULL,
    master_salt {blob} NOT NULL,
    num {int} NOT NULL,
    exp {int} NOT NULL,
    lifetime {int} NOT NULL,
    hkdf_alg {int} NOT NULL,
    aead_alg {int},
    group_enc_alg {int} NOT NULL,
    sign_alg {int} NOT NULL,
    ecdh_alg {int},
    cred_fmt {int} NOT NULL,
    max_sid_len {int} NOT NULL,
    policies {blob} NOT NULL,
    backward_security {int} NOT NULL,
    active {int} NOT NULL,
    stale_sets_kept {int} NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL REFERENCES groups(name),
    node TEXT NOT NULL,
    roles {int} NOT NULL,
    credential {blob},
    sender_id {blob},
    birth_gid {blob} NOT NULL,
    scope {blob} NOT NULL,
    client_nonce {blob} NOT NULL,
    joined_at {real} NOT NULL,
    PRIMARY KEY (grp, node)
);
CREATE UNIQUE INDEX IF NOT EXISTS members_sid ON members (grp, sender_id)
    WHERE sender_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS member_keys (
    grp TEXT NOT NULL REFERENCES groups(name),
    node TEXT NOT NULL,
    public_key {blob} NOT NULL,
    PRIMARY KEY (grp, node)
);
CREATE INDEX IF NOT EXISTS member_keys_key ON member_keys (grp, public_key);
CREATE TABLE IF NOT EXISTS sid_allocations (
    grp TEXT NOT NULL REFERENCES groups(name),
    gid {blob} NOT NULL,
    sender_id {blob} NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (grp, gid, sender_id)
);
CREATE INDEX IF NOT EXISTS sid_allocations_node ON sid_allocations (grp, gid, node);
CREATE TABLE IF NOT EXISTS sid_cursors (
    grp TEXT PRIMARY KEY REFERENCES groups(name),
    gid {blob} NOT NULL,
    next_index {int} NOT NULL,
    relinquished {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS evicted_elders (
    grp TEXT NOT NULL REFERENCES groups(name),
    node TEXT NOT NULL,
    PRIMARY KEY (grp, node)
);
CREATE TABLE IF NOT EXISTS stale_sets (
    grp TEXT NOT NULL REFERENCES groups(name),
    num {int} NOT NULL,
    sender_ids {blob} NOT NULL,
    PRIMARY KEY (grp, num)
);
CREATE TABLE IF NOT EXISTS access (
    node TEXT NOT NULL,
    grp TEXT NOT NULL,
    roles {int} NOT NULL,
    PRIMARY KEY (node, grp)
);
CREATE TABLE IF NOT EXISTS admins (
    node TEXT NOT NULL,
    pattern TEXT NOT NULL,
    perms {int} NOT NULL,
    PRIMARY KEY (node, pattern)
);
CREATE TABLE IF NOT EXISTS group_info (
    grp TEXT PRIMARY KEY REFERENCES groups(name),
    info {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS challenges (
    node TEXT PRIMARY KEY,
    challenge {blob} NOT NULL,
    expires {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS request_pivs (
    key TEXT NOT NULL,
    piv {int} NOT NULL,
    PRIMARY KEY (key, piv)
);
CREATE TABLE IF NOT EXISTS sequence_numbers (
    key TEXT PRIMARY KEY,
    upto {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    node TEXT PRIMARY KEY,
    master_secret {blob} NOT NULL,
    master_salt {blob} NOT NULL,
    gm_sender_id {blob} NOT NULL,
    node_sender_id {blob} NOT NULL UNIQUE,
    id_context {blob},
    aead_alg {int} NOT NULL,
    hkdf_alg {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS edhoc_peers (
    node TEXT PRIMARY KEY,
    credential {blob} NOT NULL UNIQUE,
    kid {blob}
);
CREATE TABLE IF NOT EXISTS edhoc_identity (
    one {int} PRIMARY KEY CHECK (one = 1),
    private_key {blob} NOT NULL,
    credential {blob} NOT NULL
);
"""


def schema_statements(*, blob: str, real: str, integer: str) -> list[str]:
    """The CREATE statements with a backend's column types filled in."""
    text = _SCHEMA.format(blob=blob, real=real, int=integer)
    return [s.strip() for s in text.split(";") if s.strip()]
