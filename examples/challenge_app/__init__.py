"""The command-line machinery of ``examples/challenge.py``, kept out of the story it tells.

- :mod:`challenge_app.command_line`: the options, their defaults and checks, the data by content;
- :mod:`challenge_app.processes`: one process or several under torchrun;
- :mod:`challenge_app.checkpoints`: the training state, checkpoints and ``--resume``;
- :mod:`challenge_app.outputs`: metrics.json, the curve, the best model, the submission;
- :mod:`challenge_app.outcome`: every expected error as one line on stderr and an exit status.

Beside it, ``atomic.py`` replaces the output folder as a whole and ``options.py`` checks option
values as they are parsed; ``challenge_data.py`` reads and checks the CSV files.
"""
