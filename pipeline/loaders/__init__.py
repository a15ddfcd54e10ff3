"""Archives handed to downstream training, as the format and the ledger allow.

torch_data.py    An archive -> a PyTorch IterableDataset of latents or samples.
raydata.py       An archive -> a Ray Dataset of latents or samples.
"""
