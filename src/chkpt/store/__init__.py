"""The store: where checkpoints live, on local disk or in a bucket. One owner per fact:

- layout.py   the key of every file (`runs/<id>/checkpoints/NNNNNN.json`, blobs' names, what is data)
- backend.py  the protocol a place of files implements (get, put_atomic, put_if_absent, stat, list, delete)
- local.py    a directory, with the trust checks; files.py its descriptors, locks.py its flocks
- objects.py  a bucket through obstore (s3://, gs://, az://)
- cache.py    a bucket read through a local cache, this machine's waiting runs in front
- core.py     blobs, runs, pins, usage, checkpoints and leftovers, written once over any backend
- codec.py    compression; threads.py the worker threads; errors.py the errors

docs/store-format.md has the format.
"""

from chkpt.store.core import CHUNK_SIZE, RunWriter, Store, hash_buffer, is_script
from chkpt.store.errors import Damaged, RemoteError, StoreError, Untrusted
from chkpt.store.locks import FileLock

__all__ = ["CHUNK_SIZE", "Damaged", "FileLock", "RemoteError", "RunWriter", "Store", "StoreError", "Untrusted",
           "hash_buffer", "is_script"]
