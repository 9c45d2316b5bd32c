"""The dataset formats training reads, one module each, chosen by content (detect.py) or by the
config's ``format:``:

    imagefolder  images + metadata.jsonl (Hugging Face imagefolder)
    parquet      *.parquet shards with an Image column (Hugging Face Hub datasets), via pyarrow
    arrow        *.arrow files (datasets' save_to_disk), via pyarrow
    sharegpt     JSON(L) conversations + an images list (LLaMA-Factory's mllm_demo)
    llava        JSON(L) conversations from human/gpt + an image (LLaVA)

Shared pieces: rows.py (field mapping, row -> Example), chat.py (text -> chat), images.py (an
image value -> checked images, confined to the dataset folder), common.py (Example, DataReport).
"""

from train_pipeline.training.formats.common import DataError, DataReport, Example, ImageRef, SkippedRow
from train_pipeline.training.formats.read import read_dataset
from train_pipeline.training.formats.registry import FORMATS, valid_formats

__all__ = ["DataError", "DataReport", "Example", "FORMATS", "ImageRef", "SkippedRow", "read_dataset", "valid_formats"]
