"""Write the relay's OpenAPI document, as FastAPI generates it from the app, to docs/openapi.json.

`make openapi` runs it; tests/test_openapi.py fails while the committed copy is stale.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def openapi_document() -> str:
    """The document as committed: FastAPI's, with stable key order and a final newline."""
    # Building the app needs a key to be configured; the document does not depend on it.
    os.environ.setdefault("OPENAI_API_KEY", "sk-openapi-document-only")
    from handler.app import create_app
    from handler.settings import Settings

    app = create_app(Settings(_env_file=None, openai_api_key="sk-openapi-document-only"))
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    DOCUMENT.write_text(openapi_document(), encoding="utf-8")
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
