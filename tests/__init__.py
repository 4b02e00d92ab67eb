"""Test suite (a package, so that `tests.*` helpers never resolve to a same-named installed module)."""
