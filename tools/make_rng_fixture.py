#!/usr/bin/python3
"""Records numpy's legacy generator for the rng test: for each seed, np.random.seed(seed), then
1001 draws of np.random.randn (odd, so the cached second Gaussian is exercised) and 100 of
np.random.random_sample, as exact decimal doubles.

Usage: tools/make_rng_fixture.py > tests/fixtures/numpy_rng.txt
"""
import numpy as np

print("# seed kind value  (made by tools/make_rng_fixture.py with numpy %s)" % np.__version__)
for seed in (0, 1, 12345):
    np.random.seed(seed)
    for v in np.random.randn(1001):
        print("%d gauss %.17g" % (seed, v))
    for v in np.random.random_sample(100):
        print("%d double %.17g" % (seed, v))
