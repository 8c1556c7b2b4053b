"""Metrics: FID/KID (Inception), SWD, multi-view consistency, the eval CLI."""
