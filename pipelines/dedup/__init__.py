"""Near-duplicate detection building blocks: MinHash signatures (``minhash``), LSH banding and bucket edges
(``lsh``), connected components on Ray Data (``components``), which record survives and how the others are
marked (``removal``), and Ray Data helpers (``datasets``). The stages are ``pipelines/stages/dedup_*.py``."""
