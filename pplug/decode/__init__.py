"""Decode and score: examples -> decoded LaMP outputs for every method (`inference`), choosing among
candidates (`choose`: MBR, preference), the facet preference models (`preference`), every method side
by side on the same examples (`evaluate`), and why a user got their output (`explain`: the history weights,
the output with and without the history).

May import: core, lamp, encode, persona, methods, modeling.
"""
