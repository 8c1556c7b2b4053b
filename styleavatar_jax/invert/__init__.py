"""Inversion: a portrait -> camera, w, w+ and a PTI-tuned G; reading the portrait and the
image losses (SSIM, MS-SSIM, PSNR) it is scored with."""
