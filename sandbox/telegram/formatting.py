"""Message text: parse_mode (HTML, MarkdownV2, Markdown) to plain text plus entities.

Offsets and lengths are in UTF-16 code units, as in the Bot API. Errors read
like Telegram's `Bad Request: can't parse entities: ...`.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from sandbox.telegram.errors import ApiError, bad_request

Entity = dict[str, Any]

_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{1,32})?(?=\s|$)")
_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_HTML_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "code": "code", "pre": "pre", "a": "text_link",
    "tg-spoiler": "spoiler", "span": "spoiler", "blockquote": "blockquote",
}


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _parse_error(detail: str) -> ApiError:
    return bad_request(f"can't parse entities: {detail}")


def command_entities(text: str) -> list[Entity]:
    """The `bot_command` entity Telegram attaches to a message starting with /command."""
    match = _COMMAND.match(text)
    if not match:
        return []
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(match.group())}]


def parse(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    mode = (parse_mode or "").strip().lower()
    if not mode:
        return text, []
    if mode == "html":
        return _parse_html(text)
    if mode == "markdownv2":
        return _MarkdownV2(text, strict=True).parse()
    if mode == "markdown":
        return _MarkdownV2(text, strict=False).parse()
    raise bad_request(f"unsupported parse_mode {parse_mode!r}")


def _sorted(entities: list[Entity]) -> list[Entity]:
    kept = [e for e in entities if e["length"] > 0]
    return sorted(kept, key=lambda e: (e["offset"], -e["length"]))


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.pos = 0  # UTF-16 offset of the end of `out`
        self.open: list[tuple[str, Entity]] = []
        self.entities: list[Entity] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        kind = _HTML_TAGS.get(tag)
        attributes = dict(attrs)
        if kind is None or (tag == "span" and attributes.get("class") != "tg-spoiler"):
            raise _parse_error(f'Unsupported start tag "{tag}"')
        entity: Entity = {"type": kind, "offset": self.pos}
        if tag == "a":
            href = attributes.get("href") or ""
            if not href:
                raise _parse_error('Can\'t find "href" attribute of the "a" tag')
            entity["url"] = href
        if tag == "code" and self.open and self.open[-1][0] == "pre":
            language = (attributes.get("class") or "").removeprefix("language-")
            if language:
                self.open[-1][1]["language"] = language
            self.open.append((tag, {}))  # the inner <code> of <pre> is not its own entity
            return
        self.open.append((tag, entity))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1][0] != tag:
            raise _parse_error(f'Unmatched end tag "{tag}"')
        _, entity = self.open.pop()
        if entity:
            entity["length"] = self.pos - entity["offset"]
            self.entities.append(entity)

    def handle_data(self, data: str) -> None:
        self.out.append(data)
        self.pos += utf16_len(data)


def _parse_html(text: str) -> tuple[str, list[Entity]]:
    parser = _Html()
    parser.feed(text)
    parser.close()
    if parser.open:
        raise _parse_error(
            f'Can\'t find end tag corresponding to start tag "{parser.open[-1][0]}"'
        )
    return "".join(parser.out), _sorted(parser.entities)


class _MarkdownV2:
    """MarkdownV2 (strict: reserved characters must be escaped) or legacy Markdown."""

    def __init__(self, text: str, *, strict: bool) -> None:
        self.text = text
        self.strict = strict
        self.i = 0
        self.out: list[str] = []
        self.pos = 0
        self.open: list[tuple[str, int]] = []
        self.entities: list[Entity] = []

    def _emit(self, chunk: str) -> None:
        self.out.append(chunk)
        self.pos += utf16_len(chunk)

    def _toggle(self, kind: str, width: int) -> None:
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index][0] == kind:
                _, start = self.open.pop(index)
                self.entities.append({"type": kind, "offset": start, "length": self.pos - start})
                break
        else:
            self.open.append((kind, self.pos))
        self.i += width

    def _until(self, closing: str, what: str) -> str:
        """Raw text up to `closing` (escapes of ` \\ ) honoured in strict mode)."""
        chunk: list[str] = []
        while self.i < len(self.text):
            if self.text.startswith(closing, self.i):
                self.i += len(closing)
                return "".join(chunk)
            char = self.text[self.i]
            if char == "\\" and self.strict and self.i + 1 < len(self.text):
                chunk.append(self.text[self.i + 1])
                self.i += 2
                continue
            chunk.append(char)
            self.i += 1
        raise _parse_error(f"Can't find end of {what} entity")

    def parse(self) -> tuple[str, list[Entity]]:
        text = self.text
        singles = {"*": "bold", "_": "italic", "~": "strikethrough"}
        if not self.strict:
            singles = {"*": "bold", "_": "italic"}
        while self.i < len(text):
            char = text[self.i]
            if char == "\\" and self.strict:
                if self.i + 1 >= len(text):
                    raise _parse_error("Character '\\' is reserved and must be escaped")
                self._emit(text[self.i + 1])
                self.i += 2
            elif text.startswith("```", self.i):
                self.i += 3
                body = self._until("```", "pre")
                language, newline, rest = body.partition("\n")
                entity: Entity = {"type": "pre", "offset": self.pos}
                if newline and language.strip() and " " not in language.strip():
                    entity["language"] = language.strip()
                    body = rest
                self._emit(body)
                entity["length"] = self.pos - entity["offset"]
                self.entities.append(entity)
            elif char == "`":
                self.i += 1
                start = self.pos
                self._emit(self._until("`", "code"))
                self.entities.append({"type": "code", "offset": start, "length": self.pos - start})
            elif self.strict and text.startswith("__", self.i):
                self._toggle("underline", 2)
            elif self.strict and text.startswith("||", self.i):
                self._toggle("spoiler", 2)
            elif char in singles:
                self._toggle(singles[char], 1)
            elif char == "[":
                self.open.append(("text_link", self.pos))
                self.i += 1
            elif char == "]" and self.open and self.open[-1][0] == "text_link":
                self._close_link()
            elif self.strict and char in _MDV2_RESERVED:
                raise _parse_error(
                    f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
                )
            else:
                self._emit(char)
                self.i += 1
        if self.open:
            raise _parse_error(f"Can't find end of {self.open[-1][0]} entity")
        return "".join(self.out), _sorted(self.entities)

    def _close_link(self) -> None:
        _, start = self.open.pop()
        self.i += 1
        if not self.text.startswith("(", self.i):
            if self.strict:
                raise _parse_error("Character ']' is reserved and must be escaped")
            self._emit("]")
            return
        self.i += 1
        url = self._until(")", "text_link URL")
        if url:
            self.entities.append(
                {"type": "text_link", "offset": start, "length": self.pos - start, "url": url}
            )
