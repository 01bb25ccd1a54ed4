"""Benchmarks of real-esrgan-async against its emulator: run them with ``python -m benchmarks``."""
