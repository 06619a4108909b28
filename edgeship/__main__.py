"""``python -m edgeship`` (what torchrun runs on each rank: ``torchrun --nproc-per-node 2 -m edgeship export R``)."""

from edgeship.cli import app

app(prog_name="edgeship")
