"""Analysis: pure pandas/numpy/scipy on DataFrames from the store (no SQL, no printing)."""
