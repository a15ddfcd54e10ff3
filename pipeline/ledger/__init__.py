"""The bookkeeping, with one owner: what there is to do, what is done, what may be trusted.

    shard.py         Shard (an input file -> its output file) and Listed (an archive file as
                     its records describe it): the nouns the rest of the ledger uses.
    manifest.py      What was committed of each file -> _manifest/files.parquet (one row a
                     file) and manifest.json (the summary); failures -> failures.json.
    completion.py    A worker's body -> one committed output file, its _done/ record (written
                     last) and a ShardResult; shard_states for resume, from listings and this
                     job's manifest (no torch).
    integrity.py     An archive -> its files with what the manifest recorded (size, sha256,
                     rows); the checks decode, inspect and verify make.
    plan.py          An input (or archive) URI -> deterministic Shard descriptors; fingerprints.
    job.py           Encode settings + calibrated parameters -> JobParams and job.json;
                     --overwrite's clean-up of the previous job's files.
    claim.py         An output folder -> held by one driver at a time (_claim.json).

Inside, imports point one way: shard <- manifest <- completion <- integrity <- plan <- job.
No torch: the driver imports this package.
"""
