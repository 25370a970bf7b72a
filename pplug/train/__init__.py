"""Training with Lightning: the optimisation settings every trainer reads (`config`), the LightningModule
(`module`), LaMP splits as batches (`data`), progress lines (`callbacks`) and the preference models' training
(`preference`).

May import: core, lamp, encode, persona, methods, modeling, synth, decode.
"""
