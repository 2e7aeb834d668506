"""Data in: reading the sets, validating them, DICOM, and the synthetic demo sets."""
