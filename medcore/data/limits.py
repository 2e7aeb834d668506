"""What one file may cost to read: the limits validation and predict hold every image (and DICOM) to."""

from __future__ import annotations

__all__ = ["MAX_FILE_BYTES", "MAX_DECODED_BYTES"]

MAX_FILE_BYTES = 512 * 2**20
# The bound is on what one decode allocates (width x height x channels x bytes per sample), not on
# pixels: a 12k x 12k 16-bit RGBA PNG of 1 MB has fewer pixels than a 12k x 12k film but decodes to
# 1.1 GB. 512 MiB still admits a 12k x 12k 8-bit RGB film; with at most 4 reading threads, 2 GiB in all.
MAX_DECODED_BYTES = 512 * 2**20
