"""Colour conversions and a classic, for the flashls end-to-end check."""


def rgb_to_yiq(r, g, b):
    y = 0.30*r + 0.59*g + 0.11*b
    i = 0.74*(r-y) - 0.27*(b-y)
    q = 0.48*(r-y) + 0.41*(b-y)
    return (y, i, q)


def fibonacci(n):
    """The n-th Fibonacci number."""
    if n < 2:
        return n
    return 