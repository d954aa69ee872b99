"""Heuristic quality filtering: text statistics (:mod:`.text`), the published rule sets (:mod:`.presets`),
language codes (:mod:`.languages`) and per-language stop-word lists (``stopwords/<lang>.txt``)."""
