"""The ground every layer stands on: no torch, no Ray, nothing else of vaezip's.

errors.py        ConfigError, InputError (file and row), CheckpointError.
storage.py       URIs -> bytes, listings and atomic writes (the one door to fsspec).
names.py         A relative path -> its output file names; a row -> its sample key.
value_range.py   The data units a model's 0..1 stands for.
hostpool.py      A batch's rows + a function -> the results, on N host threads, in order.
overlap.py       Iterators -> the same items, read ahead (prefetch) or written one behind.
"""
