"""Training and what it reports.

dataset.py       A dataset sample -> in-memory model arrays (training, evaluation); random
                 crops; the value range training picks.
training.py      Arrays + TrainSettings -> a trained VAE and its history.
generate.py      A VAE + a seed -> samples from the prior.
report.py        Training history + reconstructions -> report.png.
"""
