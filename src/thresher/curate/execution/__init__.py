"""The execution layer: the curation code that runs work on Ray (Ray Data, plain tasks, one-process tables).

Global stages move key rows only through it: ``datasets`` (mapping blocks, whole groups, broadcasts, on a Ray
dataset or a ``LocalTable``) and ``tasks`` (plain tasks over the blocks, small results gathered)."""
