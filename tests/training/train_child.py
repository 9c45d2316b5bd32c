"""Run ``train`` in a child process, optionally SIGKILLing itself at a given step.

Usage: python train_child.py MODEL_DIR DATA_DIR OUTPUT_DIR CONFIG_JSON [KILL_AT_STEP]

The kill is a real SIGKILL of the training process (no cleanup, no atexit, no flush), sent from
inside so it lands at a known step; where it lands relative to checkpoint saves is the test's
choice. Prints the TrainResult as JSON on the last line when training finishes.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from transformers import TrainerCallback

from train_pipeline.training.config import TrainConfig
from train_pipeline.training.finetune import train


class KillAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        # on_step_end runs after the optimizer step and before this step's log and checkpoint.
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    model_dir, data_dir, output_dir, config_json = argv[:4]
    callbacks = [KillAt(int(argv[4]))] if len(argv) > 4 else []
    config = TrainConfig.model_validate_json(config_json)
    result = train(model_dir, data_dir, output_dir, config, callbacks=callbacks)
    print(json.dumps(result.to_json()))


if __name__ == "__main__":
    main(sys.argv[1:])
