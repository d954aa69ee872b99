"""Near-duplicate detection building blocks: MinHash signatures (``minhash``), LSH banding and bucket edges
(``lsh``), connected components (``components``), which record survives and how the others are
marked (``removal``); the key rows move through ``curate/execution/rows`` (``KeyRows``). The stages are
``curate/stages/dedup_*.py``."""
