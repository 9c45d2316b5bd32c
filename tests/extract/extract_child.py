"""Child process for the kill tests: extracts, and parks inside the extraction once it is half done.

    python extract_child.py ARCHIVE TARGET MARKER

The progress callback runs on the extracting thread between chunks, so when MARKER appears the
temp folder holds a partial extraction and the process sleeps until the test SIGKILLs it.
"""

import sys
import time
from pathlib import Path

from resumable.extract import extract

archive, target, marker = sys.argv[1:4]


def park_halfway(done: int, total: int) -> None:
    if done >= total // 2 and done < total:
        Path(marker).write_text("parked")
        time.sleep(600)


result = extract(archive, target, progress=park_halfway)
print(result.status)
