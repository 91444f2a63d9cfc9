"""Ours beside Hugging Face transformers on one GPU (same as `w2v bench`); see w2v/bench/gpu.py."""

from w2v.bench.gpu import main

if __name__ == "__main__":
    main()
