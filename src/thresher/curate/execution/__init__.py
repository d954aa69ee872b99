"""The execution layer: the curation code that runs work on Ray (Ray Data, plain tasks, one-process tables).

Global stages move key rows only through ``rows`` (the ``KeyRows`` interface, on Ray or in one process); ``shuffle``
groups rows by key with plain tasks; ``worker`` is what runs inside the tasks (broadcasts read once per worker);
``segments`` runs a segment's map stages into a sink; ``tasks`` the plain tasks of the plan and commit phases."""
