#!/usr/bin/env python3
"""Security mutants: each one deletes or weakens one security rule; a test must notice.

Every entry of ``MUTANTS`` names a file under ``src/grouposcore``, exact source snippets that
must each occur exactly once in it, their replacements, and the tests that must fail once
the rule is broken. The check copies ``src``, ``tests`` and ``pyproject.toml`` into a scratch
folder, applies one mutant at a time, runs ``pytest -x`` on its targets with ``PYTHONPATH``
pointing at the scratch ``src`` and restores the file. It exits 1 if any mutant survives
(every target passed), if a snippet is not found exactly once (the code was refactored: update
the table, do not drop the mutant), or if the unmutated targets do not pass (a "kill" would
then prove nothing).

Targets are paths, pytest node ids or globs relative to the repository; a glob that matches
nothing is an error, so a renamed test file cannot silently weaken the check. A target
starting with ``!`` removes the files it matches (e.g. the byte-exact vectors, when the
mutant must be caught by a behavioural test).

Usage: ``python3 tools/mutants.py [--list] [--no-baseline] [ID ...]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PER_MUTANT_TIMEOUT = 300.0

# Target sets shared by several mutants (globs; later files run only if earlier ones pass).
OSCORE = ("tests/security/test_*.py", "tests/oscore/test_*.py")
OSCORE_BEHAVIOUR = (*OSCORE, "!tests/oscore/test_*vectors*.py")
# The sans-I/O Group Manager tests first, then every other manager test but the networked ones
# (so that a new test file there counts without a table change).
GM = (
    "tests/security/test_*.py",
    "tests/manager/test_core_join.py",
    "tests/manager/test_core_rekey.py",
    "tests/manager/test_core_*.py",
    "tests/manager/test_service.py",
    "tests/manager/test_*.py",
    "!tests/manager/test_runtime*.py",
)
MEMBER = (
    "tests/security/test_*.py",
    "tests/manager/test_member.py",
    "tests/manager/test_core_*.py",
)


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: ``edits`` are (snippet, replacement) pairs applied to ``file``."""

    id: str
    file: str
    edits: tuple[tuple[str, str], ...]
    targets: tuple[str, ...]
    why: str


MUTANTS: tuple[Mutant, ...] = (
    # --- listed in issue 9 ("Tests that would not catch a regression today") ---------------
    Mutant(
        "group-own-sender-id",
        "oscore/group.py",
        (("if kid == self.sender_id and not self.process_own_requests:", "if False:"),),
        OSCORE,
        "a request carrying the member's own Sender ID is a reflection and must be refused",
    ),
    Mutant(
        "gm-requester-role",
        "manager/membership.py",
        (
            (
                "if perm & ~self.store.allowed_roles(node, g.name):",
                "if perm & ~self.store.allowed_roles(node, g.name) & ~(1 << Role.REQUESTER):",
            ),
        ),
        GM,
        "a node allowed only as Responder must not grant itself the Requester role",
    ),
    Mutant(
        "gm-responder-role",
        "manager/membership.py",
        (
            (
                "if perm & ~self.store.allowed_roles(node, g.name):",
                "if perm & ~self.store.allowed_roles(node, g.name) & ~(1 << Role.RESPONDER):",
            ),
        ),
        GM,
        "a node allowed only as Requester must not grant itself the Responder role",
    ),
    Mutant(
        "gm-creds-needs-member-or-verifier",
        "manager/core.py",
        (
            (
                "verifier = member is None and bool(allowed & _VERIFIER)",
                "verifier = member is None and bool(allowed)",
            ),
        ),
        GM,
        "/creds is for members and Verifiers only, not for anyone on the access list",
    ),
    Mutant(
        "gm-challenge-expiry",
        "manager/pop.py",
        (("        if entry[1] < self._clock():\n", "        if False:\n"),),
        GM,
        "an expired kdcchallenge must not prove possession of a key",
    ),
    Mutant(
        "gm-pop-signature-check",
        "manager/pop.py",
        (
            (
                "            signature_by_id(sign_alg).verify(cred.public_key, pop, data)\n",
                "            pass\n",
            ),
        ),
        GM,
        "a joiner proves possession of its private key by signing the GM's challenge",
    ),
    Mutant(
        "gm-challenge-single-use",
        "manager/pop.py",
        (("        self._live.pop(node, None)\n", "        pass\n"),),
        GM,
        "a kdcchallenge is consumed by the join that used it (no replay of a join's PoP)",
    ),
    Mutant(
        "oscore-echo-value",
        "oscore/context.py",
        (
            (
                "if self.echo_challenge is not None and result.options.echo == self.echo_challenge:",
                "if True:",
            ),
        ),
        OSCORE,
        "an invalid replay window may only be recovered by a retry carrying our Echo value",
    ),
    Mutant(
        "group-echo-value",
        "oscore/group.py",
        (
            (
                "elif rc.echo_challenge is not None and result.options.echo == rc.echo_challenge:",
                "elif True:",
            ),
        ),
        OSCORE,
        "an invalid group replay window is recovered only by a request carrying our Echo value",
    ),
    Mutant(
        "oscore-response-replay",
        "oscore/context.py",
        (("        tracker.check(opt.piv)\n", "        pass\n"),),
        OSCORE,
        "a replayed response or notification must be refused (plain OSCORE)",
    ),
    Mutant(
        "oscore-response-aad-request-piv",
        "oscore/context.py",
        (
            (
                "aad = self._aad(binding.request_kid, binding.request_piv)",
                "aad = self._aad(binding.request_kid, b'')",
            ),
            (
                "nonce, plaintext, self._aad(binding.request_kid, binding.request_piv)",
                "nonce, plaintext, self._aad(binding.request_kid, b'')",
            ),
        ),
        OSCORE_BEHAVIOUR,
        "the request's Partial IV in the response AAD binds a response to one request",
    ),
    Mutant(
        "group-response-aad-request-piv",
        "oscore/group_base.py",
        (
            (
                "        if binding.context is self and binding.aad_prefix:\n"
                "            return binding.aad_prefix\n"
                "        return self._aad_prefix(\n"
                "            binding.request_kid, binding.request_piv, binding.request_kid_context\n",
                "        return self._aad_prefix(\n"
                "            binding.request_kid, b'', binding.request_kid_context\n",
            ),
        ),
        OSCORE_BEHAVIOUR,
        "the request's Partial IV in the response AAD binds a response to one request",
    ),
    Mutant(
        "group-response-aad-request-kid",
        "oscore/group_base.py",
        (
            (
                "        if binding.context is self and binding.aad_prefix:\n"
                "            return binding.aad_prefix\n"
                "        return self._aad_prefix(\n"
                "            binding.request_kid, binding.request_piv, binding.request_kid_context\n",
                "        return self._aad_prefix(\n"
                "            b'', binding.request_piv, binding.request_kid_context\n",
            ),
        ),
        OSCORE_BEHAVIOUR,
        "the requester's kid in the response AAD binds a response to one requester's request",
    ),
    # --- core rules -------------------------------------------------------------------
    Mutant(
        "group-replay-window-check",
        "oscore/group.py",
        (("            window.check(seq)\n", "            pass\n"),),
        OSCORE,
        "a group request already received (or older than the window) must be refused",
    ),
    Mutant(
        "oscore-replay-window-check",
        "oscore/context.py",
        (("            window.check(seq)\n", "            pass\n"),),
        OSCORE,
        "a plain OSCORE request already received must be refused",
    ),
    Mutant(
        "group-window-update-before-verify",
        "oscore/group.py",
        (
            (
                "            window.check(seq)\n",
                "            window.check(seq)\n            window.update(seq)\n",
            ),
        ),
        OSCORE,
        "a forged request must not move the replay window (update only after verification)",
    ),
    Mutant(
        "oscore-window-update-before-verify",
        "oscore/context.py",
        (
            (
                "            window.check(seq)\n",
                "            window.check(seq)\n            window.update(seq)\n",
            ),
        ),
        OSCORE,
        "a forged request must not move the replay window (update only after verification)",
    ),
    Mutant(
        "group-skip-signature-check",
        "oscore/group_base.py",
        (
            (
                "            verify(\n"
                "                rc.credential.public_key, sig, _CSIG0_HEAD + external_aad + cbor_bstr(ciphertext)\n"
                "            )\n",
                "            pass\n",
            ),
        ),
        OSCORE,
        "group mode: the signature proves which member sent; it is checked before decryption",
    ),
    Mutant(
        "group-new-recipient-valid-after-delete",
        "oscore/group_base.py",
        (
            (
                "valid=self.replay_windows_valid and not self.recipient_deleted,",
                "valid=self.replay_windows_valid,",
            ),
        ),
        OSCORE,
        "once a Recipient Context was deleted, new ones start with invalid windows (§2.6.1.2)",
    ),
    Mutant(
        "group-remove-recipient-not-a-deletion",
        "oscore/group_base.py",
        (
            (
                "        if self._recipients.pop(rid, None) is not None:\n"
                "            self.recipient_deleted = True\n",
                "        self._recipients.pop(rid, None)\n",
            ),
        ),
        OSCORE,
        "removing a Recipient Context loses its replay state: later ones start invalid",
    ),
    Mutant(
        "group-lru-eviction-not-a-deletion",
        "oscore/group_base.py",
        (
            (
                "            self._recipients.popitem(last=False)\n"
                "            self.recipient_deleted = True\n",
                "            self._recipients.popitem(last=False)\n",
            ),
        ),
        OSCORE,
        "evicting a Recipient Context (table full) loses its replay state like a deletion",
    ),
    Mutant(
        "sequence-used-before-reserved",
        "oscore/sequence.py",
        (
            (
                "if self.store is not None and seq >= self._limit:",
                "if self.store is not None and seq > self._limit:",
            ),
        ),
        OSCORE,
        "a sequence number is durably reserved before it is used (no nonce reuse after a crash)",
    ),
    Mutant(
        "sequence-not-resumed",
        "oscore/sequence.py",
        (("                start = max(start, resumed)\n", "                pass\n"),),
        OSCORE,
        "after a restart the sender resumes after the last reservation",
    ),
    Mutant(
        "file-sequence-store-not-read",
        "oscore/sequence.py",
        (("        return data\n", "        return {}\n"),),
        OSCORE,
        "the file store must reload what it persisted",
    ),
    Mutant(
        "file-sequence-store-not-written",
        "_files.py",
        (("        os.replace(tmp, target)\n", "        os.unlink(tmp)\n"),),
        OSCORE,
        "a reservation is on disk before the number is used",
    ),
    Mutant(
        "sequence-file-reservation-unlocked",
        "_files.py",
        (("        fcntl.flock(fd, fcntl.LOCK_EX)\n", "        pass\n"),),
        ("tests/oscore/test_sequence_shared_file.py",),
        "processes sharing a sequence file never reserve the same numbers (no nonce reuse)",
    ),
    Mutant(
        "group-response-replay",
        "oscore/group.py",
        (("        tracker.check(resp_piv)\n", "        pass\n"),),
        OSCORE,
        "a replayed group response or notification must be refused",
    ),
    Mutant(
        "response-tracker-second-without-piv",
        "oscore/common.py",
        (("            if self.no_piv_seen:\n", "            if False:\n"),),
        OSCORE,
        "only one response per server may reuse the request nonce (no Partial IV)",
    ),
    Mutant(
        "response-tracker-piv-window",
        "oscore/common.py",
        (('            self.window.check(int.from_bytes(piv, "big"))\n', "            pass\n"),),
        OSCORE,
        "a response or notification Partial IV is accepted at most once per request and server",
    ),
    Mutant(
        "group-flag-without-group-mode",
        "oscore/group_base.py",
        (("        if group_flag and not self.group_mode:\n", "        if False:\n"),),
        OSCORE,
        "a group-mode message for a group without group mode is refused with a typed error",
    ),
    Mutant(
        "plain-oscore-refuses-group-flag",
        "oscore/context.py",
        (
            (
                "        if opt.group:\n"
                '            raise OscoreDecodeError("Group Flag set on a request for an OSCORE '
                'context")\n',
                "",
            ),
        ),
        OSCORE,
        "a Group OSCORE request is not processed by a plain OSCORE context",
    ),
    Mutant(
        "group-key-derivation-without-gid",
        "oscore/group_base.py",
        (
            (
                '            id_,\n            self.gid,\n            alg.id,\n            "Key",\n',
                '            id_,\n            None,\n            alg.id,\n            "Key",\n',
            ),
        ),
        OSCORE,
        "the Gid (ID Context) enters every key derivation: each Gid has its own keys",
    ),
    Mutant(
        "group-pairwise-response-from-another-member",
        "oscore/group.py",
        (
            (
                "if binding.intended_recipient is not None and kid != binding.intended_recipient:",
                "if False:",
            ),
        ),
        OSCORE,
        "a pairwise request is answered only by the member it was meant for",
    ),
    Mutant(
        "member-eviction-notification-terminates",
        "manager/member.py",
        (("            raise MembershipTerminated(str(err))\n", "            raise err\n"),),
        MEMBER,
        "an eviction notification ends the membership (the member stops using the group)",
    ),
    Mutant(
        "runtime-terminated-member-keeps-serving",
        "manager/member_contexts.py",
        (("                    sec.remove(inst.context)\n", "                    pass\n"),),
        (
            "tests/security/test_*.py",
            "tests/manager/test_runtime.py::test_forward_security_after_eviction",
        ),
        "an evicted member's server stops accepting requests under the old group context",
    ),
    Mutant(
        "gm-rejoin-rekeys",
        "manager/membership.py",
        (
            (
                "                current is not None\n                or (g.backward_security",
                "                (g.backward_security",
            ),
        ),
        ("tests/model/test_group_model_known.py", "tests/manager/test_core_join.py"),
        "a current member's re-join (it lost its state) gets new keys, never its old ones",
    ),
    Mutant(
        "gm-rejoin-budget",
        "manager/membership.py",
        (("return max(0.0, due - now - (self.burst - 1) * self.interval)", "return 0.0"),),
        ("tests/manager/test_core_join.py",),
        "a member re-joining in a loop cannot make the GM rekey the group without end",
    ),
    Mutant(
        "gm-join-budget-only-for-members",
        "manager/membership.py",
        (
            (
                "        wait = self._rejoins.wait(g.name, node, self._clock())\n",
                "        wait = existing is not None and self._rejoins.wait(g.name, node, self._clock())\n",
            ),
            (
                "            wait = self._rejoins.take(g.name, node, self._clock())\n",
                "            wait = current is not None and self._rejoins.take(g.name, node, self._clock())\n",
            ),
        ),
        ("tests/manager/test_core_join.py",),
        "a node leaving and joining in a loop cannot make the GM rekey the group without end",
    ),
)


# --- machinery ---------------------------------------------------------------------------


class TableError(Exception):
    """The mutant table no longer matches the code or the tests."""


def resolve_targets(root: Path, targets: tuple[str, ...]) -> list[str]:
    """Expand globs (relative to ``root``); node ids and paths must exist."""
    chosen: list[str] = []
    for target in targets:
        if target.startswith("!"):
            pattern = target[1:]
            chosen = [t for t in chosen if not fnmatch.fnmatch(t.split("::")[0], pattern)]
            continue
        path = target.split("::")[0]
        if any(ch in path for ch in "*?["):
            found = sorted(str(p.relative_to(root)) for p in root.glob(path))
            if not found and not path.startswith("tests/security/"):
                raise TableError(f"target {target!r} matches no file")
            chosen.extend(f for f in found if f not in chosen)
        else:
            if not (root / path).exists():
                raise TableError(f"target {target!r} does not exist")
            if target not in chosen:
                chosen.append(target)
    if not chosen:
        raise TableError(f"targets {targets!r} select no test")
    return chosen


def mutated_source(source: str, mutant: Mutant) -> str:
    for snippet, replacement in mutant.edits:
        count = source.count(snippet)
        if count != 1:
            raise TableError(
                f"{mutant.id}: snippet found {count} times in src/grouposcore/{mutant.file} "
                f"(must be exactly once; the code changed: update the table in "
                f"tools/mutants.py):\n{snippet}"
            )
        source = source.replace(snippet, replacement)
    try:
        compile(source, mutant.file, "exec")
    except SyntaxError as exc:
        raise TableError(f"{mutant.id}: the mutated file does not compile: {exc}") from None
    return source


def pytest_env(scratch: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(scratch / "src"), str(scratch)]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != "src"]
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc must never hide a mutant
    return env


def run_pytest(scratch: Path, targets: list[str]) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *targets]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            cwd=scratch,
            env=pytest_env(scratch),
            capture_output=True,
            text=True,
            timeout=PER_MUTANT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return -1, "", time.monotonic() - start
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def first_failure(output: str) -> str:
    match = _FAILED.search(output)
    return match.group(1) if match else "?"


def make_scratch() -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="grouposcore-mutants-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", "*.egg-info")
    for name in ("src", "tests"):
        shutil.copytree(REPO / name, scratch / name, ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", scratch / "pyproject.toml")
    probe = subprocess.run(
        [sys.executable, "-c", "import grouposcore; print(grouposcore.__file__)"],
        cwd=scratch,
        env=pytest_env(scratch),
        capture_output=True,
        text=True,
        check=True,
    )
    if not Path(probe.stdout.strip()).resolve().is_relative_to(scratch.resolve()):
        raise RuntimeError(f"the scratch copy is not the one imported: {probe.stdout.strip()}")
    return scratch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the run of the unmutated targets"
    )
    args = parser.parse_args(argv)

    ids = [m.id for m in MUTANTS]
    if len(set(ids)) != len(ids):
        print("duplicate mutant ids", file=sys.stderr)
        return 1
    unknown = set(args.ids) - set(ids)
    if unknown:
        print(f"unknown mutant ids: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 1
    chosen = [m for m in MUTANTS if not args.ids or m.id in args.ids]
    if args.list:
        for m in chosen:
            print(f"{m.id:45} src/grouposcore/{m.file:22} {m.why}")
        return 0

    # Check the whole table against the code before spending time on tests.
    problems: list[str] = []
    plans: list[tuple[Mutant, str, str, list[str]]] = []
    for m in chosen:
        try:
            original = (REPO / "src" / "grouposcore" / m.file).read_text(encoding="utf-8")
            plans.append(
                (m, original, mutated_source(original, m), resolve_targets(REPO, m.targets))
            )
        except (TableError, OSError) as exc:
            problems.append(str(exc))
    if problems:
        print("mutant table out of date:", *problems, sep="\n  ", file=sys.stderr)
        return 1

    scratch = make_scratch()
    try:
        if not args.no_baseline:
            union: list[str] = []
            for *_, targets in plans:
                union.extend(t for t in targets if t not in union)
            rc, out, secs = run_pytest(scratch, union)
            if rc != 0:
                print(out[-3000:])
                print(
                    f"baseline: the unmutated targets do not pass ({secs:.1f}s): "
                    f"{first_failure(out)}",
                    file=sys.stderr,
                )
                return 1
            print(f"baseline: {len(union)} target files pass unmutated ({secs:.1f}s)")

        rows: list[tuple[str, str, float, str]] = []
        for m, original, mutated, targets in plans:
            path = scratch / "src" / "grouposcore" / m.file
            path.write_text(mutated, encoding="utf-8")
            try:
                rc, out, secs = run_pytest(scratch, targets)
            finally:
                path.write_text(original, encoding="utf-8")
            if rc == 1:
                rows.append((m.id, "killed", secs, first_failure(out)))
            elif rc == 0:
                rows.append((m.id, "SURVIVED", secs, "-"))
            elif rc == -1:
                rows.append((m.id, "ERROR", secs, f"timeout after {PER_MUTANT_TIMEOUT:.0f}s"))
            else:
                rows.append((m.id, "ERROR", secs, f"pytest exit {rc}: {first_failure(out)}"))
            print(f"  {m.id}: {rows[-1][1]} ({secs:.1f}s)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'mutant':{width}}  {'result':8}  {'secs':>5}  killing test")
    for mid, result, secs, test in rows:
        print(f"{mid:{width}}  {result:8}  {secs:5.1f}  {test}")
    bad = [r for r in rows if r[1] != "killed"]
    total = sum(r[2] for r in rows)
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutants killed in {total:.0f}s")
    if bad:
        why = {m.id: m.why for m in MUTANTS}
        print(
            "not killed (the rule can be removed with every test green: add a test that "
            "fails without it):",
            file=sys.stderr,
        )
        for mid, result, _, detail in bad:
            print(
                f"  {mid} [{result}{': ' + detail if detail != '-' else ''}]: {why[mid]}",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
