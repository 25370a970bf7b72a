"""The facts and the plumbing every stage reads: the LaMP tasks (`tasks`), the text batch (`batch`), devices
and dtypes (`runtime`), atomic writes (`io`), where model weights come from (`weights`) and which saved
checkpoint a command serves (`checkpoints`).

May import: nothing of pplug.
"""
