"""`python -m medcore.config`: print the config reference, or write docs/configuration.md whole."""

from __future__ import annotations

import argparse

from medcore.config.reference import config_reference, write_reference

parser = argparse.ArgumentParser(description="print the config reference, or write the whole reference document")
parser.add_argument("--reference", help="write the reference document (docs/configuration.md) to this path")
args = parser.parse_args()
if args.reference:
    write_reference(args.reference)
else:
    print(config_reference(), end="")
