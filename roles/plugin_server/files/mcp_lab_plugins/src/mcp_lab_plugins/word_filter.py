"""WordFilterPlugin: replace configured words in tool arguments before the tool runs."""

from __future__ import annotations

import re
from typing import Any

from cpex.framework import Plugin, PluginConfig, PluginContext, ToolPreInvokePayload, ToolPreInvokeResult


def build_pattern(words: dict[str, str]) -> re.Pattern[str] | None:
    """One regex matching any configured word as a whole word, longest first."""
    if not words:
        return None
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def replace_words(value: Any, pattern: re.Pattern[str] | None, table: dict[str, str]) -> tuple[Any, int]:
    """Return (new value, number of replacements) for strings nested in lists/dicts."""
    if pattern is None:
        return value, 0
    if isinstance(value, str):
        return pattern.subn(lambda match: table[match.group(0).lower()], value)
    if isinstance(value, list):
        count = 0
        items = []
        for item in value:
            new, hits = replace_words(item, pattern, table)
            items.append(new)
            count += hits
        return items, count
    if isinstance(value, dict):
        count = 0
        mapping = {}
        for key, item in value.items():
            new, hits = replace_words(item, pattern, table)
            mapping[key] = new
            count += hits
        return mapping, count
    return value, 0


class WordFilterPlugin(Plugin):
    """Replace words in tool arguments; config ``words: {bad: good}``."""

    def __init__(self, config: PluginConfig) -> None:
        super().__init__(config)
        settings = config.config or {}
        words = settings.get("words") or {}
        if not isinstance(words, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in words.items()):
            raise ValueError(f"plugin {config.name}: config.words must map strings to strings")
        self._table = {key.lower(): value for key, value in words.items()}
        self._pattern = build_pattern(self._table)

    async def tool_pre_invoke(self, payload: ToolPreInvokePayload, context: PluginContext) -> ToolPreInvokeResult:
        args, count = replace_words(payload.args or {}, self._pattern, self._table)
        if not count:
            return ToolPreInvokeResult(continue_processing=True)
        return ToolPreInvokeResult(
            continue_processing=True,
            modified_payload=payload.model_copy(update={"args": args}),
            metadata={"word_filter_replacements": count},
        )
