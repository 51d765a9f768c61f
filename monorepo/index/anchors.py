"""The links of a PEP 503 (HTML) project page: its ``<a>`` elements and ``<base href>``.

Kept apart from :mod:`monorepo.index.pages` so that :mod:`html.parser` is imported only by a run
that meets an HTML page; most indexes serve PEP 691 JSON.
"""

from __future__ import annotations

from html.parser import HTMLParser

#: One ``<a>``: its attributes (a valueless attribute maps to None) and its text.
Anchor = tuple[dict[str, str | None], str]


class _AnchorCollector(HTMLParser):
    """Collects ``<a>`` elements (attributes and text) and an optional ``<base href>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[Anchor] = []
        self.base: str | None = None
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._close_anchor()
            self._current = dict(attrs)
            self._text = []
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close_anchor()

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)

    def close(self) -> None:
        super().close()
        self._close_anchor()

    def _close_anchor(self) -> None:
        if self._current is not None:
            self.anchors.append((self._current, "".join(self._text).strip()))
            self._current = None


def page_anchors(text: str) -> tuple[list[Anchor], str | None]:
    """Every ``<a>`` of *text* in document order, and the first ``<base href>`` if any."""
    collector = _AnchorCollector()
    collector.feed(text)
    collector.close()
    return collector.anchors, collector.base
