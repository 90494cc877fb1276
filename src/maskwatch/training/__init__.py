"""Training: data and split, face-crop cache, frozen-feature cache, head training, export.

Needs the ``train`` extra (PyTorch); inference never imports this package.
"""
