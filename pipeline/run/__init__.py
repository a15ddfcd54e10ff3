"""Where work runs.

runner.py        Shard descriptors + a worker class -> results from a pool of Ray actors
                 (the one module that talks to Ray; no torch).
"""
