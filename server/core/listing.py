"""Every model, uploaded and catalogued, behind one opaque page token: uploads first, then the
catalog's own pages."""

from __future__ import annotations

import base64
import json
import re
from typing import Iterable, Iterator

from ..catalog import Catalog, ModelInfo, page_of
from ..errors import InvalidPage
from ..storage import Uploads

PAGE_MAX = 1000  # the most models one page holds when the core walks every page itself
PAGE_TOKEN_MAX = 4096  # characters; a real token is far shorter
# A token as _encode_page writes it, matched without parsing nested JSON (which recurses).
_TOKEN = re.compile(r'\["(upload|catalog)", (null|"(?:[^"\\]|\\.)*")\]')


class Listing:
    def __init__(self, catalog: Catalog, uploads: Uploads):
        self.catalog = catalog
        self.uploads = uploads

    def page(self, compartment_id: str | None, project_id: str | None, limit: int,
             page: str | None) -> tuple[list[ModelInfo], str | None]:
        source, token = _decode_page(page)
        models: list[ModelInfo] = []
        if source == "upload":
            uploads = [m for m in self.uploads.list() if m.matches(compartment_id, project_id)]
            models, next_upload = page_of(uploads, limit, token)
            if next_upload:
                return models, _encode_page("upload", next_upload)
            source, token = "catalog", None
        if len(models) == limit:
            return models, _encode_page("catalog", None)
        page_models, next_token = self.catalog.list(compartment_id, project_id, limit - len(models), token)
        return models + page_models, (_encode_page("catalog", next_token) if next_token else None)

    def all_models(self) -> Iterator[ModelInfo]:
        """Every model, uploaded and catalogued, loaded or not, page after page."""
        page = None
        while True:
            models, page = self.page(None, None, PAGE_MAX, page)
            yield from models
            if page is None:
                return

    def all_catalog_ids(self) -> Iterable[str]:
        page = None
        while True:
            models, page = self.catalog.list(None, None, PAGE_MAX, page)
            yield from (m.id for m in models)
            if page is None:
                return

    def named(self, name: str) -> list[ModelInfo]:
        """Every model (loaded or not) whose name or id is `name`."""
        return [m for m in self.all_models() if name in (m.name, m.id)]


def _encode_page(source: str, token: str | None) -> str:
    return base64.urlsafe_b64encode(json.dumps([source, token]).encode()).decode()


def _decode_page(page: str | None) -> tuple[str, str | None]:
    if not page:
        return "upload", None
    if len(page) > PAGE_TOKEN_MAX:
        raise InvalidPage()
    try:
        found = _TOKEN.fullmatch(base64.urlsafe_b64decode(page.encode()).decode())
        if found is None:
            raise ValueError
        source, token = found[1], found[2]
        return source, None if token == "null" else json.loads(token)
    except ValueError:  # bad base64, UTF-8 or JSON string escapes all are
        raise InvalidPage() from None
