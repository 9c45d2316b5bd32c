"""Constants shared by the training tests (importable: pytest puts this folder on sys.path)."""

# Small images and short sequences keep a step at tens of milliseconds on CPU.
FAST = {
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "min_pixels": 56 * 56,
    "max_pixels": 112 * 112,
    "max_length": 256,
    "learning_rate": 3e-3,
}
