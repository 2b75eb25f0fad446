"""Optional integrations, each behind an extra: ``fastq.contrib.prometheus``
(``pip install 'fastq-tasks[prometheus]'``) and ``fastq.contrib.otel`` (``[otel]``).

``import fastq`` never imports them or their dependencies.
"""
