"""Device-side data: reading the user's files, encoding them into model inputs, batching, splitting.

Only numpy, tokenizers, pillow and the standard library are imported here, so a device that
trains or evaluates never needs torch or transformers.
"""
