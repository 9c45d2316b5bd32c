"""train-pipeline: resumable, verified downloads and Qwen2-VL fine-tuning as a Prefect pipeline."""
