"""aiohttp, imported by init with the CA store of its default TLS context loaded in a thread.

As it imports, aiohttp's connector module builds its two default SSL contexts, and each loads
the system's CA store (OpenSSL parses every certificate in it) on the importing thread, before
any of the app's own imports can start (docs/architecture.md, "Cold start"). Only one of them
needs the store: the verified context, the one aiohttp uses for every `https` request not given
a context of its own; the other verifies nothing.

So init imports aiohttp with OpenSSL's default CA file (its `SSL_CERT_FILE` variable) pointed at
an empty one for the length of the import, and the verified context then loads the store as
`ssl.create_default_context()` would have, in a thread: OpenSSL parses it with the GIL
released, beside the imports that follow. An operator's own `SSL_CERT_FILE` is put back first,
and is what the thread loads. Until `wait_for_ca_store()` returns, that context trusts nothing,
so a connection opened too early fails verification (closed, never open): the secret's read and
init's connections wait for it first.

Only the Lambda runtimes' init imports aiohttp this way (`handler.runtime`, `handler.lwa`);
anywhere aiohttp was imported before (tests, `make dev`), its contexts already hold the store and
the wait returns at once. aiohttp has no public switch for it: the context is its connector's
`_SSL_CONTEXT_VERIFIED` (aiohttp is pinned; tests/test_init_ca_store.py checks the store it ends
up with).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl

_CA_FILE = "SSL_CERT_FILE"  # OpenSSL's variable for its default CA file


class _CaStoreLoad:
    """The load of the store into aiohttp's verified context, on a thread of its own."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, name="ca-store", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            self._context.load_default_certs()
        except BaseException as exc:  # raised on the thread that waits, as an import would
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


_loading: _CaStoreLoad | None = None


def import_aiohttp() -> None:
    """Import aiohttp without its CA store, and start loading the store into its verified
    context on a thread. Nothing to do if aiohttp is imported already."""
    global _loading
    if "aiohttp.connector" in sys.modules:
        return
    operators = os.environ.get(_CA_FILE)
    os.environ[_CA_FILE] = os.devnull
    try:
        from aiohttp import connector
    finally:
        if operators is None:
            del os.environ[_CA_FILE]
        else:
            os.environ[_CA_FILE] = operators
    _loading = _CaStoreLoad(connector._SSL_CONTEXT_VERIFIED)


def ca_store_deferred() -> bool:
    """Whether aiohttp was imported here, its CA store loading (or loaded) on a thread."""
    return _loading is not None


def wait_for_ca_store() -> None:
    """Return once aiohttp's verified context holds the CA store (at once when it always did);
    the load's failure, if it failed, is raised here."""
    if _loading is not None:
        _loading.wait()
