"""EG3D checkpoints -> Flax variables (a safe pickle reader and the parameter mapping);
CLIP and Inception weights."""
