"""A small module to try `aigc-code complete` on (see README)."""

import math


def mean(values):
    """Arithmetic mean of a non-empty list."""
    return sum(values) / len(values)


def stddev(values):
    """Population standard deviation."""
    m = mean(values)
    
    return math.sqrt(variance)


if __name__ == "__main__":
    print(mean([1, 2, 3]), stddev([1, 2, 3]))
