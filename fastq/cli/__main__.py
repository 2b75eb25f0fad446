"""``python -m fastq.cli`` = the ``fastq`` command."""
from fastq.cli import main

main()
