"""sparsebert: compress a BERT-family encoder for one task by pruning while distilling."""

__version__ = "0.1.0"
