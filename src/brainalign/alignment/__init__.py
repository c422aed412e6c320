"""Alignment: the streaming engine and its metrics, brain summaries, permutation nulls, ceilings,
encoding models, RSA and the align batches."""
