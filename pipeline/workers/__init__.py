"""The workers: plain classes, made remote by ``pipeline.run`` (a test calls them without Ray).

model_worker.py  Checkpoint + device + threads + precision -> a loaded model (the
                 workers' base); its host workers, from the CPUs Ray gave the actor.
encoder.py       A Shard -> Encoded batches: keys, layouts, posterior means, log-variances.
encode.py        EncodeWorker: calibrate(shards) -> quantizer/codec parameters;
                 process(shard, job) -> one .vz.parquet file.
decode.py        DecodeWorker: process(archive shard) -> one reconstruction output.
features.py      FeatureWorker: process(shard) -> one Parquet table of posterior means.
"""
