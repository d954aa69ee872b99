"""Near-duplicate detection building blocks: MinHash signatures and LSH parameters (``minhash``), and
connected components over candidate edges on Ray Data (``components``)."""
