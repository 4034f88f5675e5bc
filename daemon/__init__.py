"""shelfd, the Shelf library daemon (run with ``shelfd`` or ``python -m daemon``)."""
