"""Near-duplicate detection building blocks: MinHash signatures (``minhash``), LSH banding and bucket edges
(``lsh``), connected components on Ray Data (``components``), which record survives and how the others are
marked (``removal``); the Ray Data helpers they use are in ``curate/execution/datasets``. The stages are
``curate/stages/dedup_*.py``."""
