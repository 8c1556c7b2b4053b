"""Synthetic heads: the SDF mannequin, user meshes, 3D keypoints, OpenPose drawing, guidance
images (depth, pose) and the mannequin dataset writer."""
