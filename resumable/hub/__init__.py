"""Hugging Face Hub snapshots that resume after a kill and verify every file.

huggingface_hub resolves the revision and lists the files (sizes, LFS sha256, git blob sha1);
our transfer engine fetches each file from its resolve URL into a plain folder, so a killed
process resumes where it stopped. Layout under ``dest_root``::

    <org>--<name>/refs/<revision>          the commit a branch or tag pointed to last time
    <org>--<name>/<commit>/...             the files: ``from_pretrained(<this folder>)`` loads it
    <org>--<name>/<commit>/.snapshot.json  the manifest (repo, revision, commit, tree, files)

Datasets live in ``datasets--<org>--<name>/``. A file that another commit's snapshot already
holds, verified, with the same hash is hard-linked (else copied), not downloaded again.
huggingface_hub is imported inside functions only: the engine must start fast.
"""

from .common import RemoteFile, SnapshotError, SnapshotResult
from .manifest import MANIFEST, snapshot_is_complete
from .snapshots import snapshot

__all__ = ["MANIFEST", "RemoteFile", "SnapshotError", "SnapshotResult", "snapshot", "snapshot_is_complete"]
