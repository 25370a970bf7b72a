"""Decode and score: examples -> decoded LaMP outputs for every method (`inference`), choosing among
candidates (`choose`: MBR, preference), the facet preference models (`preference`), and every method side
by side on the same examples (`evaluate`).

May import: core, lamp, encode, persona, methods, modeling.
"""
