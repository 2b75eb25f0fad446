"""The Inspector's Redis calls: see ``fastq._rdb.calls`` (one Call type, one NOSCRIPT path)."""
from fastq._rdb.calls import Call, Steps, adrive, aexecute, cmd, drive, execute, script

__all__ = ["Call", "Steps", "script", "cmd", "execute", "aexecute", "drive", "adrive"]
