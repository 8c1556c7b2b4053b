"""Data: dataset formats (EG3D folder/zip, tfds), the camera validator, the input pipeline."""
