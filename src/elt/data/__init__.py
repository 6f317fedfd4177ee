"""Datasets: Fashion-MNIST, image folders, video."""
