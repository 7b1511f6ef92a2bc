"""The issuance log: every issuance and revocation appended to a Merkle tree with signed tree heads.

Modelled on Certificate Transparency (RFC 9162): leaves are hashed with a 0x00 prefix and inner
nodes with 0x01 (pymerkle's "security" mode), the tree is the left-balanced tree of RFC 9162 section
2.1, a *tree head* (size, root hash, time, issuer key id) is signed with the issuer's Ed25519 key,
and two kinds of proof are checked with pymerkle: *inclusion* (this entry is leaf i of the tree
of that head) and *consistency* (the tree of an older head is a prefix of the tree of a newer one,
so nothing was removed or rewritten in between).

Files, under ``<registry>/log/``::

    entries.jsonl               one RFC 8785 canonical JSON entry per line (the leaf bytes)
    tree-head.json              the latest signed tree head: {"tree_head": {...}, "signature": base64}
                                (one file, so head and signature are replaced together)
    tree-heads/<size>.json      every signed tree head, kept so that monitors can ask for proofs

and beside each certificate ``<id>.log.json``: its entry, the signed tree head right after it was
logged, and the inclusion proof, so that the proof travels with a copied certificate.

An issuer that re-issues a certificate quietly (new bytes under an old id) or back-dates one must
append an entry that every monitor holding an earlier tree head sees: the log only grows.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greencert.errors import ConfigError, PublishError

LOG_DIR = "log"
ENTRIES = "entries.jsonl"
TREE_HEAD = "tree-head.json"
TREE_HEADS = "tree-heads"
TREE_HEAD_FORMAT = "greencert-log-tree-head/1"
INCLUSION_FORMAT = "greencert-log-inclusion/1"
ALGORITHM = "sha256"


@dataclass(frozen=True)
class SignedTreeHead:
    document: dict[str, Any]  # format, tree_size, root_hash (hex), timestamp, key_id
    body: bytes  # canonical bytes, what is signed
    signature: bytes

    @property
    def size(self) -> int:
        return int(self.document["tree_size"])

    @property
    def root_hash(self) -> bytes:
        return bytes.fromhex(self.document["root_hash"])

    def verify(self, public: Any) -> bool:
        from greencert.certificate.sign import key_id, signature_valid

        return self.document.get("key_id") == key_id(public) and signature_valid(
            public, self.signature, self.body
        )

    def to_json(self) -> dict[str, Any]:
        return {"tree_head": self.document, "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignedTreeHead:
        from greencert.certificate.build import canonical_bytes

        document = data["tree_head"]
        if not isinstance(document, dict) or document.get("format") != TREE_HEAD_FORMAT:
            raise ValueError("not a GreenCert tree head")
        return cls(document, canonical_bytes(document), base64.b64decode(data["signature"], validate=True))


def _tree(leaves: list[bytes]) -> Any:
    from pymerkle import InmemoryTree

    tree = InmemoryTree(algorithm=ALGORITHM)
    for leaf in leaves:
        tree.append_entry(leaf)
    return tree


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 9162 leaf hash: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def _log_dir(registry: Path) -> Path:
    return registry / LOG_DIR


def read_entries(registry: Path) -> list[bytes]:
    data, _ = _read_entries_tagged(registry)
    return data


def _read_entries_tagged(registry: Path) -> tuple[list[bytes], str | None]:
    from greencert.files import read_tagged

    data, tag = read_tagged(_log_dir(registry) / ENTRIES)
    if data is None:
        return [], None
    return [line for line in data.split(b"\n") if line], tag


def read_tree_head(path: Path) -> SignedTreeHead:
    """A signed tree head file (``tree-head.json``, ``tree-heads/<size>.json``, or one kept by a monitor)."""
    try:
        return SignedTreeHead.from_json(json.loads(path.read_bytes()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"not a readable GreenCert tree head ({exc})", str(path)) from None


def latest_tree_head(registry: Path) -> SignedTreeHead | None:
    return _latest_tree_head_tagged(registry)[0]


def _latest_tree_head_tagged(registry: Path) -> tuple[SignedTreeHead | None, str | None]:
    from greencert.files import read_tagged

    path = _log_dir(registry) / TREE_HEAD
    data, tag = read_tagged(path)
    if data is None:
        return None, None
    try:
        return SignedTreeHead.from_json(json.loads(data)), tag
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"not a readable GreenCert tree head ({exc})", str(path)) from None


def _sign_tree_head(tree: Any, key: Any, moment: dt.datetime) -> SignedTreeHead:
    from greencert.certificate.build import canonical_bytes
    from greencert.times import stamp

    document = {
        "format": TREE_HEAD_FORMAT,
        "tree_size": tree.get_size(),
        "root_hash": tree.get_root().hex(),
        "timestamp": stamp(moment),
        "key_id": key.key_id,
    }
    body = canonical_bytes(document)
    return SignedTreeHead(document, body, key.sign(body))


@dataclass
class LogState:
    """The log as read at the start of one update: entries, tree, latest head and their version tags."""

    leaves: list[bytes]
    tree: Any
    head: SignedTreeHead | None
    entries_tag: str | None
    head_tag: str | None


def read_log(registry: Path, public: Any, also: list[Any] | None = None) -> LogState:
    """The log's entries and tree, after checking they match the latest tree head, signed by ``public``
    or one of ``also`` (keys the registry's root still authorises, after a rotation).

    Refuses (PublishError) a log whose entries were cut or rewritten since the issuer last signed.
    The head is read before the entries: a concurrent writer only ever appends, so the entries
    read after a head always extend it.
    """
    head, head_tag = _latest_tree_head_tagged(registry)
    leaves, entries_tag = _read_entries_tagged(registry)
    tree = _tree(leaves)
    if head is None:
        if leaves:
            raise PublishError("issuance log has entries but no signed tree head", str(_log_dir(registry)))
        return LogState(leaves, tree, None, entries_tag, head_tag)
    if not any(head.verify(k) for k in [public, *(also or [])]):
        raise PublishError("issuance log tree head is not signed by this issuer", str(_log_dir(registry)))
    if head.size > tree.get_size() or tree.get_root(head.size) != head.root_hash:
        raise PublishError(
            f"issuance log was altered: its first {head.size} entries no longer hash to the signed tree head",
            str(_log_dir(registry) / ENTRIES),
        )
    return LogState(leaves, tree, head, entries_tag, head_tag)


def checked_log(registry: Path, public: Any, also: list[Any] | None = None) -> tuple[list[bytes], Any]:
    """``(entries, tree)`` of :func:`read_log`."""
    state = read_log(registry, public, also)
    return state.leaves, state.tree


def entries_by_certificate(leaves: list[bytes]) -> dict[str, dict[str, Any]]:
    """Certificate id -> its latest entry of each type (see :func:`latest_entries`)."""
    out: dict[str, dict[str, Any]] = {}
    for index, leaf in enumerate(leaves, start=1):
        entry = json.loads(leaf)
        out.setdefault(entry["certificate_id"], {})[entry["type"]] = {**entry, "leaf_index": index}
    return out


def append(
    registry: Path,
    key: Any,
    entries: list[dict[str, Any]],
    moment: dt.datetime,
    also: list[Any] | None = None,
    *,
    state: LogState | None = None,
    resign: bool = True,
) -> tuple[SignedTreeHead, Any]:
    """Append ``entries``, sign the new tree head and return it with the tree.

    Locally the caller holds the registry lock. On object stores the entries file and the tree
    head are replaced with conditional writes (If-Match on what ``state``, or a fresh read, saw):
    a concurrent publisher that got there first makes this raise
    :class:`greencert.files.Conflict`, and the caller starts its update again from a fresh read.
    The tree head is signed even when nothing was appended (entries a killed run appended without
    signing are covered then), unless ``resign=False`` and the current head already covers every
    entry and is this key's.
    """
    from greencert.certificate.build import canonical_bytes
    from greencert.files import put_if, write_file

    state = state or read_log(registry, key.public, also)
    leaves, tree = state.leaves, state.tree
    new_leaves = [canonical_bytes(e) for e in entries]
    if (
        not resign
        and not new_leaves
        and state.head is not None
        and state.head.size == len(leaves)
        and state.head.document.get("key_id") == key.key_id
    ):
        return state.head, tree
    for leaf in new_leaves:
        tree.append_entry(leaf)
    head = _sign_tree_head(tree, key, moment)
    folder = _log_dir(registry)
    if new_leaves:
        put_if(
            folder / ENTRIES,
            b"".join(line + b"\n" for line in [*leaves, *new_leaves]),
            state.entries_tag,
            create=not leaves,
        )
    data = json.dumps(head.to_json(), sort_keys=True).encode()
    # Kept for monitors; one size has one root (only one writer's entries file wins a size).
    write_file(folder / TREE_HEADS / f"{head.size}.json", data)
    put_if(folder / TREE_HEAD, data, state.head_tag, create=state.head is None)
    return head, tree


def inclusion_record(tree: Any, head: SignedTreeHead, index: int, entry: dict[str, Any]) -> dict[str, Any]:
    """What ``<id>.log.json`` holds: the entry, the signed tree head and the inclusion proof of leaf ``index``."""
    return {
        "format": INCLUSION_FORMAT,
        "entry": {k: v for k, v in entry.items() if k != "leaf_index"},
        "leaf_index": index,
        **head.to_json(),
        "proof": tree.prove_inclusion(index, head.size).serialize(),
    }


def latest_entries(registry: Path) -> dict[str, dict[str, Any]]:
    """Certificate id -> its latest entry of each type, e.g. {"issue": {...}, "revoke": {...}}, each with
    its ``leaf_index`` (counting from 1)."""
    return entries_by_certificate(read_entries(registry))


class LogProofError(Exception):
    """An inclusion or consistency proof did not verify (the message says which part)."""


def check_inclusion(record: dict[str, Any], public: Any, certificate_sha256: str) -> SignedTreeHead:
    """Check an inclusion record (``<id>.log.json``) for a certificate with the given hash."""
    from pymerkle import InvalidProof, MerkleProof, verify_inclusion

    from greencert.certificate.build import canonical_bytes

    try:
        if record.get("format") != INCLUSION_FORMAT:
            raise LogProofError("not a GreenCert log inclusion record")
        head = SignedTreeHead.from_json(record)
        entry = record["entry"]
        proof = MerkleProof.deserialize(record["proof"])
    except (KeyError, TypeError, ValueError, InvalidProof) as exc:
        if isinstance(exc, LogProofError):
            raise
        raise LogProofError(f"inclusion record is malformed ({exc})") from None
    if not head.verify(public):
        raise LogProofError("the tree head is not signed by the certificate's issuer")
    if entry.get("type") != "issue" or entry.get("sha256") != certificate_sha256:
        raise LogProofError("the logged entry is not the issuance of these certificate bytes")
    try:
        verify_inclusion(
            leaf_hash(canonical_bytes(entry)),
            head.root_hash,
            proof,
            index=int(record["leaf_index"]),
            size=head.size,
            algorithm=ALGORITHM,
        )
    except (InvalidProof, KeyError, ValueError, TypeError) as exc:
        raise LogProofError(f"inclusion proof does not verify against the signed tree head ({exc})") from None
    return head


def prove_consistency(registry: Path, old_size: int, new_size: int) -> dict[str, Any]:
    """A consistency proof between two tree sizes, computed from the registry's entries (untrusted:
    the proof is checked against the two signed heads, see :func:`check_consistency`)."""
    leaves = read_entries(registry)
    if not 0 < old_size <= new_size <= len(leaves):
        raise ConfigError(
            f"the log holds {len(leaves)} entries: no proof from size {old_size} to {new_size}",
            str(_log_dir(registry)),
        )
    return _tree(leaves[:new_size]).prove_consistency(old_size, new_size).serialize()


def check_consistency(
    old: SignedTreeHead, new: SignedTreeHead, proof_data: dict[str, Any], publics: list[Any]
) -> None:
    """Both heads signed by a trusted key (``publics``), and the older tree a prefix of the newer."""
    from pymerkle import InvalidProof, MerkleProof, verify_consistency

    for name, head in (("older", old), ("newer", new)):
        if not any(head.verify(k) for k in publics):
            raise LogProofError(f"the {name} tree head is not signed by a trusted issuer key")
    if new.size < old.size:
        raise LogProofError(
            f"the newer tree head is smaller ({new.size} < {old.size} entries): entries removed"
        )
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            raise LogProofError("two tree heads of the same size with different roots: the log was forked")
        return
    try:
        proof = MerkleProof.deserialize(proof_data)
        verify_consistency(
            old.root_hash, new.root_hash, proof, prior_size=old.size, later_size=new.size, algorithm=ALGORITHM
        )
    except (InvalidProof, KeyError, ValueError, TypeError) as exc:
        raise LogProofError(
            f"the tree of {old.size} entries is not a prefix of the tree of {new.size} ({exc})"
        ) from None
