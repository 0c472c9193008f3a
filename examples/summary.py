"""Summary statistics of a sample (a sibling of stats.py: the repository index finds code like this)."""


def mean(values):
    return sum(values) / len(values)


def describe(values):
    """Mean, population variance and range of a non-empty list."""
    m = mean(values)
    variance = sum((x - m) ** 2 for x in values) / len(values)
    return {"mean": m, "variance": variance, "range": max(values) - min(values)}
