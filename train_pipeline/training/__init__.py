"""Qwen2-VL fine-tuning. Import submodules directly: this package imports nothing heavy, so
``train_pipeline.training.settings`` stays cheap for the flow's up-front validation."""
