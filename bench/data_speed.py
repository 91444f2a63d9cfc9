"""Audio decode + crop + collate throughput per CPU worker; see w2v/bench/data.py."""

from w2v.bench.data import main

if __name__ == "__main__":
    main()
