"""Across nights: the champion registry, the nightly policy, the night budget and its speed probe."""
