"""Data: the procedural mannequin head, guidance images, dataset formats, input pipeline."""
