"""Run ``train`` in a child process, optionally SIGKILLing itself at a given point.

Usage: python train_child.py MODEL_DIR DATA_DIR OUTPUT_DIR CONFIG_JSON [KILL_AT]

KILL_AT is where the child kills itself:
  N              at step N, after the optimizer step, before that step's log and checkpoint
  saved:N        right after checkpoint-N is whole (and older ones rotated away)
  unrotated:N    checkpoint-N is whole, the rotation that removes older ones beyond
                 save_total_limit has not run
  saving:N       while checkpoint-N is written: weights, optimizer and scheduler are in it, the RNG
                 state and trainer_state.json are not (a half-written checkpoint, by Trainer itself)
  final-partial  while saving final/: the weights are in final.partial, the processor and the
                 rename to final/ are not done
  final          after final/ is in place, before train_result.json is written

The kill is a real SIGKILL of the training process (no cleanup, no atexit, no flush), sent from
inside so it lands at a known point; where it lands relative to checkpoint saves is the test's
choice. Prints the TrainResult as JSON on the last line when training finishes.

A distributed run (worker processes under torchrun) is held instead, for the test to kill:

    python train_child.py --cli-held N FOLDER train MODEL_DIR DATA_DIR OUTPUT_DIR --config FILE ...

runs the training command line (``python -m train_pipeline.training train ...``) with every worker
started from this file: once checkpoint-N is written (its own part: rank 0 the weights, optimizer,
scheduler and trainer_state.json, every rank its RNG state) and rotated, a worker writes
``FOLDER/held-rank-R`` and waits, up to HOLD_LIMIT seconds, then dies. With every rank's file there,
the run is certainly between checkpoint-N and step N+1, whatever the machine's load.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from train_pipeline.training import finetune
from train_pipeline.training.settings import TrainConfig
from train_pipeline.training.finetune import train


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(TrainerCallback):
    def __init__(self, step: int, after_save: bool = False):
        self.step = step
        self.after_save = after_save

    def on_step_end(self, args, state, control, **kwargs):
        # on_step_end runs after the optimizer step and before this step's log and checkpoint.
        if not self.after_save and state.global_step == self.step:
            _die()

    def on_save(self, args, state, control, **kwargs):
        # on_save runs once checkpoint-N is written and rotated.
        if self.after_save and state.global_step == self.step:
            _die()


def _kill_while_saving_final() -> None:
    make_class = finetune._resumable_trainer_class

    def killing_class() -> type:
        class KillingTrainer(make_class()):
            def save_model(self, output_dir=None, _internal_call=False):
                super().save_model(output_dir, _internal_call)
                if not _internal_call and str(output_dir).endswith(".partial"):
                    _die()

        return KillingTrainer

    finetune._resumable_trainer_class = killing_class


def _kill_while_saving_checkpoint(step: int) -> None:
    make_class = finetune._resumable_trainer_class

    def killing_class() -> type:
        class KillingTrainer(make_class()):
            def _save_rng_state(self, output_dir):
                if self.state.global_step == step:
                    _die()
                super()._save_rng_state(output_dir)

        return KillingTrainer

    finetune._resumable_trainer_class = killing_class


def _kill_before_rotation(step: int) -> None:
    import transformers.trainer as hf_trainer

    rotate = hf_trainer.rotate_checkpoints  # Trainer's, called after each save (transformers 5)

    def die_before_rotating(*args, **kwargs):
        if (Path(kwargs.get("output_dir") or args[0]) / f"checkpoint-{step}").is_dir():
            _die()
        return rotate(*args, **kwargs)

    hf_trainer.rotate_checkpoints = die_before_rotating


def _kill_after_final() -> None:
    save_final = finetune.save_final

    def save_then_die(*args, **kwargs):
        save_final(*args, **kwargs)
        _die()

    finetune.save_final = save_then_die


HOLD_ENV = "TRAIN_CHILD_HOLD"  # "N:FOLDER", set by --cli-held for the workers it starts
HOLD_LIMIT = 600.0  # seconds a held worker waits for its kill before it dies by itself


class HoldAfterSave(TrainerCallback):
    """In a worker: once checkpoint-N is saved (on_save: written and rotated), say so in
    ``FOLDER/held-rank-R`` and wait to be killed."""

    def __init__(self, step: int, folder: Path):
        self.step, self.folder = step, folder

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            mark = self.folder / f"held-rank-{os.environ.get('RANK', '0')}"
            mark.with_suffix(".tmp").write_text(str(os.getpid()))
            os.replace(mark.with_suffix(".tmp"), mark)
            time.sleep(HOLD_LIMIT)
            _die()


def _held_worker(spec_path: str) -> None:
    """A torchrun worker of --cli-held: train_pipeline.training.worker with HoldAfterSave added."""
    step, _, folder = os.environ[HOLD_ENV].partition(":")
    make_class = finetune._resumable_trainer_class

    def holding_class() -> type:
        class HoldingTrainer(make_class()):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_callback(HoldAfterSave(int(step), Path(folder)))

        return HoldingTrainer

    finetune._resumable_trainer_class = holding_class
    from train_pipeline.training import worker

    worker.main([spec_path])


def _cli_held(argv: list[str]) -> None:
    """The training command line, its workers started as ``python -m train_child SPEC`` (held)."""
    step, folder, cli_args = int(argv[0]), argv[1], argv[2:]
    from train_pipeline.training import distributed
    from train_pipeline.training.__main__ import main as cli_main

    run_workers = distributed.run_workers

    def held_workers(*args, **kwargs):
        return run_workers(*args, **{**kwargs, "module": "train_child"})

    distributed.run_workers = held_workers  # finetune imports it when it launches the workers
    os.environ[HOLD_ENV] = f"{step}:{folder}"
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    sys.exit(cli_main(cli_args))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--cli-held"]:
        return _cli_held(argv[1:])
    if os.environ.get(HOLD_ENV) and len(argv) == 1:  # a worker started by --cli-held
        return _held_worker(argv[0])
    model_dir, data_dir, output_dir, config_json = argv[:4]
    kill_at = argv[4] if len(argv) > 4 else None
    callbacks = []
    if kill_at == "final-partial":
        _kill_while_saving_final()
    elif kill_at == "final":
        _kill_after_final()
    elif kill_at is not None and kill_at.startswith("saving:"):
        _kill_while_saving_checkpoint(int(kill_at.removeprefix("saving:")))
    elif kill_at is not None and kill_at.startswith("unrotated:"):
        _kill_before_rotation(int(kill_at.removeprefix("unrotated:")))
    elif kill_at is not None and kill_at.startswith("saved:"):
        callbacks.append(KillAt(int(kill_at.removeprefix("saved:")), after_save=True))
    elif kill_at is not None:
        callbacks.append(KillAt(int(kill_at)))
    config = TrainConfig.model_validate_json(config_json)
    result = train(model_dir, data_dir, output_dir, config, callbacks=callbacks)
    print(json.dumps(result.to_json()))


if __name__ == "__main__":
    main(sys.argv[1:])
