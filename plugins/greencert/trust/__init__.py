"""Trust in published certificates: anchors the auditor chooses, signed registry metadata, the issuance log.

- ``store``: the issuer keys a user trusts (``greencert trust add|list|remove``);
- ``metadata``: the registry as a TUF repository (root, targets, snapshot, timestamp), written by the
  issuer and read through python-tuf's own client (``tuf.ngclient.Updater``);
- ``log``: the append-only Merkle issuance log (RFC 9162-style proofs, via pymerkle);
- ``status``: what a certificate's status is, checked against the above, for every page that shows one.

Nothing here trusts a key because it was found beside a file: see docs/trust.md for the threat model.
"""
